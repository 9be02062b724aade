using System.Net;
using System.Net.Sockets;
using Google.Protobuf;
using Microsoft.Extensions.Logging.Abstractions;
using Potluck.Node.Cli;
using Potluck.Node.P2pd;
using Potluck.Node.P2pd.Pb;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Kademlia;
using Potluck.Protocol.Multiformats;

namespace Potluck.Node.Tests.P2pd;

/// <summary>
/// Two `potluck p2pd` daemons in this process on loopback, driven over their control sockets as @libp2p/daemon-client
/// drives them; and what a client that lies, floods or stalls gets. (Real sockets and time: each wait is bounded.)
/// </summary>
[CancelAfter(60_000)]
public class P2pdDaemonTests
{
    private readonly List<IAsyncDisposable> _owned = [];

    [TearDown]
    public async Task DisposeAll()
    {
        foreach (var d in Enumerable.Reverse(_owned))
        {
            await d.DisposeAsync();
        }
        _owned.Clear();
    }

    private async Task<P2pdDaemon> StartAsync(params string[] flags)
    {
        var (settings, error) = P2pdFlags.Parse(["-listen=/ip4/127.0.0.1/tcp/0", "-hostAddrs=/ip4/127.0.0.1/tcp/0", .. flags]);
        Assert.That(error, Is.Null);
        var key = settings!.IdentityFile is null ? PrivateKey.Generate() : PrivateKey.LoadExisting(settings.IdentityFile);
        var node = await P2pdCommand.StartNodeAsync(key, settings, NullLoggerFactory.Instance, CancellationToken.None);
        _owned.Add(node);
        var daemon = P2pdDaemon.Start(node, settings.Control, settings.Echo, new P2pdLimits(), NullLogger.Instance);
        _owned.Add(daemon);
        return daemon;
    }

    /// <summary>One control connection: the client's side.</summary>
    private sealed class Control : IAsyncDisposable
    {
        private readonly TcpClient _client;

        private Control(TcpClient client)
        {
            _client = client;
            Stream = client.GetStream();
        }

        public NetworkStream Stream { get; }

        public Socket Socket => _client.Client;

        public static async Task<Control> OpenAsync(P2pdDaemon daemon, CancellationToken ct)
        {
            var client = new TcpClient();
            await client.ConnectAsync(daemon.ControlAddress.ToTcpEndPoint()!, ct);
            return new Control(client);
        }

        public async Task<Response> SendAsync(Request request, CancellationToken ct)
        {
            request.WriteDelimitedTo(Stream);
            await Stream.FlushAsync(ct);
            return await ReadAsync(Response.Parser, ct);
        }

        public Task<T> ReadAsync<T>(MessageParser<T> parser, CancellationToken ct) where T : IMessage<T> =>
            Task.Run(() => parser.ParseDelimitedFrom(Stream), ct);

        public ValueTask DisposeAsync()
        {
            _client.Dispose();
            return ValueTask.CompletedTask;
        }
    }

    private static async Task<Response> RequestAsync(P2pdDaemon daemon, Request request, CancellationToken ct)
    {
        await using var control = await Control.OpenAsync(daemon, ct);
        return await control.SendAsync(request, ct);
    }

    private static Request Identify() => new() { Type = Request.Types.Type.Identify };

    private static Request Connect(P2pdDaemon to) => new()
    {
        Type = Request.Types.Type.Connect,
        Connect = new ConnectRequest
        {
            Peer = ByteString.CopyFrom(to.Node.PeerId.Bytes),
            Addrs = { to.Node.Host.ListenAddresses.Select(a => ByteString.CopyFrom(a.Bytes.Span)) },
        },
    };

    private static async Task<List<PeerId>> ListPeersAsync(P2pdDaemon daemon, CancellationToken ct)
    {
        var response = await RequestAsync(daemon, new Request { Type = Request.Types.Type.ListPeers }, ct);
        Assert.That(response.Type, Is.EqualTo(Response.Types.Type.Ok));
        return response.Peers.Select(p => PeerId.TryFromBytes(p.Id.Span, out var id) ? id : throw new FormatException()).ToList();
    }

    /// <summary>
    /// Completes when <paramref name="host"/> holds an open connection to <paramref name="peer"/>: subscribes to the
    /// host's Connected event, then checks (so a connection made in between is not missed); no polling.
    /// </summary>
    private static async Task WaitForConnectionAsync(Potluck.Protocol.Host.IHost host, PeerId peer, CancellationToken ct)
    {
        var connected = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        void OnConnected(Potluck.Protocol.Host.IConnection c)
        {
            if (c.RemotePeer == peer)
            {
                connected.TrySetResult();
            }
        }
        host.Connected += OnConnected;
        try
        {
            if (!host.Connections.Any(c => c.RemotePeer == peer && !c.IsClosed))
            {
                await connected.Task.WaitAsync(ct);
            }
        }
        finally
        {
            host.Connected -= OnConnected;
        }
    }

    /// <summary>Completes when both daemons' DHT routing tables hold the other (on the tables' own change events).</summary>
    private static Task WaitForDhtPeersAsync(P2pdDaemon a, P2pdDaemon b, CancellationToken ct) => Task.WhenAll(
        a.Node.Dht.WaitUntilAsync(d => d.RoutingTablePeers().Contains(b.Node.PeerId), ct),
        b.Node.Dht.WaitUntilAsync(d => d.RoutingTablePeers().Contains(a.Node.PeerId), ct));

    [Test]
    public async Task IdentifyConnectListPeers_AFreshDaemonHasNoPeers_ThenBothSeeEachOther(CancellationToken ct)
    {
        var a = await StartAsync("-noListenAddrs");
        var b = await StartAsync();

        var identify = await RequestAsync(b, Identify(), ct);
        Assert.That(identify.Type, Is.EqualTo(Response.Types.Type.Ok));
        Assert.That(identify.Identify.Id.ToByteArray(), Is.EqualTo(b.Node.PeerId.ToBytes()));
        Assert.That(identify.Identify.Addrs.Select(x => Multiaddr.FromBytes(x.Span)), Is.EqualTo(b.Node.Host.ListenAddresses));
        Assert.That((await RequestAsync(a, Identify(), ct)).Identify.Addrs, Is.Empty, "-noListenAddrs");
        Assert.That(await ListPeersAsync(a, ct), Is.Empty, "no mDNS, no bootstrap: no peers");
        Assert.That(await ListPeersAsync(b, ct), Is.Empty);

        var connected = await RequestAsync(a, Connect(b), ct);

        Assert.That(connected.Type, Is.EqualTo(Response.Types.Type.Ok), connected.Error?.Msg);
        Assert.That(await ListPeersAsync(a, ct), Is.EqualTo(new[] { b.Node.PeerId }));
        await WaitForConnectionAsync(b.Node.Host, a.Node.PeerId, ct);
        Assert.That(await ListPeersAsync(b, ct), Is.EqualTo(new[] { a.Node.PeerId }));
    }

    [Test]
    public async Task StreamOpenAndHandler_BytesFlowBothWays_AndTheHandlerLearnsWhoAndWhat(CancellationToken ct)
    {
        var a = await StartAsync();
        var b = await StartAsync();
        Assert.That((await RequestAsync(a, Connect(b), ct)).Type, Is.EqualTo(Response.Types.Type.Ok));
        using var handler = new TcpListener(IPAddress.Loopback, 0);
        handler.Start();
        var registered = await RequestAsync(b, new Request
        {
            Type = Request.Types.Type.StreamHandler,
            StreamHandler = new StreamHandlerRequest
            {
                Addr = ByteString.CopyFrom(Multiaddr.FromTcpEndPoint((IPEndPoint)handler.LocalEndpoint).Bytes.Span),
                Proto = { "/test/upper/1.0.0" },
            },
        }, ct);
        Assert.That(registered.Type, Is.EqualTo(Response.Types.Type.Ok));

        await using var opener = await Control.OpenAsync(a, ct);
        var opened = await opener.SendAsync(new Request
        {
            Type = Request.Types.Type.StreamOpen,
            StreamOpen = new StreamOpenRequest { Peer = ByteString.CopyFrom(b.Node.PeerId.Bytes), Proto = { "/test/upper/1.0.0" } },
        }, ct);
        Assert.That(opened.Type, Is.EqualTo(Response.Types.Type.Ok), opened.Error?.Msg);
        Assert.That(opened.StreamInfo.Proto, Is.EqualTo("/test/upper/1.0.0"));
        Assert.That(opened.StreamInfo.Peer.ToByteArray(), Is.EqualTo(b.Node.PeerId.ToBytes()));

        using var inbound = await handler.AcceptTcpClientAsync(ct);
        var handlerStream = inbound.GetStream();
        var info = await Task.Run(() => StreamInfo.Parser.ParseDelimitedFrom(handlerStream), ct);
        Assert.That(info.Proto, Is.EqualTo("/test/upper/1.0.0"));
        Assert.That(info.Peer.ToByteArray(), Is.EqualTo(a.Node.PeerId.ToBytes()));

        await opener.Stream.WriteAsync("hello"u8.ToArray(), ct);
        opener.Socket.Shutdown(SocketShutdown.Send); // half-close: the handler sees the end
        var received = new MemoryStream();
        await handlerStream.CopyToAsync(received, ct);
        Assert.That(received.ToArray(), Is.EqualTo("hello"u8.ToArray()));
        await handlerStream.WriteAsync("HELLO"u8.ToArray(), ct);
        inbound.Client.Shutdown(SocketShutdown.Send);
        var back = new MemoryStream();
        await opener.Stream.CopyToAsync(back, ct);
        Assert.That(back.ToArray(), Is.EqualTo("HELLO"u8.ToArray()));
    }

    [Test]
    public async Task StreamOpen_Echo_IsAnsweredByTheDaemonItself(CancellationToken ct)
    {
        var a = await StartAsync();
        var b = await StartAsync();
        Assert.That((await RequestAsync(a, Connect(b), ct)).Type, Is.EqualTo(Response.Types.Type.Ok));
        await using var opener = await Control.OpenAsync(a, ct);
        var opened = await opener.SendAsync(new Request
        {
            Type = Request.Types.Type.StreamOpen,
            StreamOpen = new StreamOpenRequest { Peer = ByteString.CopyFrom(b.Node.PeerId.Bytes), Proto = { P2pdDaemon.EchoProtocol } },
        }, ct);
        Assert.That(opened.Type, Is.EqualTo(Response.Types.Type.Ok), opened.Error?.Msg);
        await opener.Stream.WriteAsync("ping"u8.ToArray(), ct);
        opener.Socket.Shutdown(SocketShutdown.Send);
        var back = new MemoryStream();
        await opener.Stream.CopyToAsync(back, ct);
        Assert.That(back.ToArray(), Is.EqualTo("ping"u8.ToArray()));
    }

    [Test]
    public async Task StreamOpen_HandlerAddressThatRefuses_ResetsTheStreamAndTheDaemonKeepsServing(CancellationToken ct)
    {
        var a = await StartAsync();
        var b = await StartAsync();
        Assert.That((await RequestAsync(a, Connect(b), ct)).Type, Is.EqualTo(Response.Types.Type.Ok));
        int closedPort;
        using (var gone = new TcpListener(IPAddress.Loopback, 0))
        {
            gone.Start();
            closedPort = ((IPEndPoint)gone.LocalEndpoint).Port;
        }
        await RequestAsync(b, new Request
        {
            Type = Request.Types.Type.StreamHandler,
            StreamHandler = new StreamHandlerRequest
            {
                Addr = ByteString.CopyFrom(Multiaddr.Parse($"/ip4/127.0.0.1/tcp/{closedPort}").Bytes.Span),
                Proto = { "/test/nobody/1.0.0" },
            },
        }, ct);
        await using var opener = await Control.OpenAsync(a, ct);
        var opened = await opener.SendAsync(new Request
        {
            Type = Request.Types.Type.StreamOpen,
            StreamOpen = new StreamOpenRequest { Peer = ByteString.CopyFrom(b.Node.PeerId.Bytes), Proto = { "/test/nobody/1.0.0" } },
        }, ct);
        // The reset may overtake the protocol's confirmation (then the open fails) or follow it (then the relayed
        // stream ends with nothing in it): either way the opener is told, and nothing hangs.
        if (opened.Type == Response.Types.Type.Error)
        {
            Assert.That(opened.Error.Msg, Does.Contain("failed to open a stream"));
        }
        else
        {
            var rest = new MemoryStream();
            try
            {
                await opener.Stream.CopyToAsync(rest, ct); // ends: the stream was reset on the other side
            }
            catch (IOException)
            {
            }
            Assert.That(rest.Length, Is.Zero);
        }
        Assert.That((await RequestAsync(b, Identify(), ct)).Type, Is.EqualTo(Response.Types.Type.Ok));
    }

    [Test]
    public async Task Dht_PutOfAPkRecord_IsFoundByTheOtherDaemon_AndAForgedOneIsRefused(CancellationToken ct)
    {
        var a = await StartAsync("-dhtServer");
        var b = await StartAsync("-dhtServer");
        Assert.That((await RequestAsync(a, Connect(b), ct)).Type, Is.EqualTo(Response.Types.Type.Ok));
        var owner = PrivateKey.Generate(KeyType.Rsa);
        var key = PublicKeyRecordValidator.KeyFor(owner.PeerId);
        await WaitForDhtPeersAsync(a, b, ct);

        var put = await RequestAsync(a, new Request
        {
            Type = Request.Types.Type.Dht,
            Dht = new DHTRequest { Type = DHTRequest.Types.Type.PutValue, Key = ByteString.CopyFrom(key), Value = ByteString.CopyFrom(owner.PublicKey.ToProtobuf()) },
        }, ct);
        Assert.That(put.Type, Is.EqualTo(Response.Types.Type.Ok), put.Error?.Msg);
        var got = await RequestAsync(b, new Request { Type = Request.Types.Type.Dht, Dht = new DHTRequest { Type = DHTRequest.Types.Type.GetValue, Key = ByteString.CopyFrom(key) } }, ct);
        Assert.That(got.Type, Is.EqualTo(Response.Types.Type.Ok), got.Error?.Msg);
        Assert.That(got.Dht.Value.ToByteArray(), Is.EqualTo(owner.PublicKey.ToProtobuf()));

        var liar = PrivateKey.Generate();
        var forged = await RequestAsync(a, new Request
        {
            Type = Request.Types.Type.Dht,
            Dht = new DHTRequest
            {
                Type = DHTRequest.Types.Type.PutValue,
                Key = ByteString.CopyFrom(PublicKeyRecordValidator.KeyFor(liar.PeerId)),
                Value = ByteString.CopyFrom(owner.PublicKey.ToProtobuf()), // someone else's key under the liar's id
            },
        }, ct);
        Assert.That(forged.Type, Is.EqualTo(Response.Types.Type.Error));
        var none = await RequestAsync(b, new Request
        {
            Type = Request.Types.Type.Dht,
            Dht = new DHTRequest { Type = DHTRequest.Types.Type.GetValue, Key = ByteString.CopyFrom(PublicKeyRecordValidator.KeyFor(liar.PeerId)), Timeout = 5 },
        }, ct);
        Assert.That(none.Type, Is.EqualTo(Response.Types.Type.Error), "nobody stored the forged record");
    }

    [Test]
    public async Task Dht_ProvideThenFindProviders_StreamsBeginValueEnd(CancellationToken ct)
    {
        var a = await StartAsync("-dhtServer");
        var b = await StartAsync("-dhtServer");
        Assert.That((await RequestAsync(a, Connect(b), ct)).Type, Is.EqualTo(Response.Types.Type.Ok));
        await WaitForDhtPeersAsync(a, b, ct);
        var cid = Base58.Decode("QmVzw6MPsF96TyXBSRs1ptLoVMWRv5FCYJZZGJSVB2Hp39");
        var provided = await RequestAsync(a, new Request { Type = Request.Types.Type.Dht, Dht = new DHTRequest { Type = DHTRequest.Types.Type.Provide, Cid = ByteString.CopyFrom(cid) } }, ct);
        Assert.That(provided.Type, Is.EqualTo(Response.Types.Type.Ok), provided.Error?.Msg);

        await using var control = await Control.OpenAsync(b, ct);
        var begin = await control.SendAsync(new Request
        {
            Type = Request.Types.Type.Dht,
            Dht = new DHTRequest { Type = DHTRequest.Types.Type.FindProviders, Cid = ByteString.CopyFrom(cid), Count = 1 },
        }, ct);
        Assert.That((begin.Type, begin.Dht.Type), Is.EqualTo((Response.Types.Type.Ok, DHTResponse.Types.Type.Begin)));
        var value = await control.ReadAsync(DHTResponse.Parser, ct);
        Assert.That(value.Type, Is.EqualTo(DHTResponse.Types.Type.Value));
        Assert.That(value.Peer.Id.ToByteArray(), Is.EqualTo(a.Node.PeerId.ToBytes()));
        Assert.That((await control.ReadAsync(DHTResponse.Parser, ct)).Type, Is.EqualTo(DHTResponse.Types.Type.End));
    }

    [Test]
    public async Task Pubsub_FloodsubSubscriberOnOneDaemon_GetsWhatTheOtherPublishes(CancellationToken ct)
    {
        var a = await StartAsync("-pubsub", "-pubsubRouter=floodsub");
        var b = await StartAsync("-pubsub", "-pubsubRouter=floodsub");
        Assert.That((await RequestAsync(a, Connect(b), ct)).Type, Is.EqualTo(Response.Types.Type.Ok));
        await using var subscriber = await Control.OpenAsync(b, ct);
        var subscribed = await subscriber.SendAsync(new Request { Type = Request.Types.Type.Pubsub, Pubsub = new PSRequest { Type = PSRequest.Types.Type.Subscribe, Topic = "t" } }, ct);
        Assert.That(subscribed.Type, Is.EqualTo(Response.Types.Type.Ok));
        var topics = await RequestAsync(b, new Request { Type = Request.Types.Type.Pubsub, Pubsub = new PSRequest { Type = PSRequest.Types.Type.GetTopics } }, ct);
        Assert.That(topics.Pubsub.Topics, Is.EqualTo(new[] { "t" }));
        await a.Node.Gossip.WaitUntilAsync(g => g.Peers("t").Contains(b.Node.PeerId), ct);
        var peers = await RequestAsync(a, new Request { Type = Request.Types.Type.Pubsub, Pubsub = new PSRequest { Type = PSRequest.Types.Type.ListPeers, Topic = "t" } }, ct);
        Assert.That(peers.Pubsub.PeerIDs.Select(p => p.ToByteArray()), Is.EqualTo(new[] { b.Node.PeerId.ToBytes() }), "the daemon lists the subscriber");

        var published = await RequestAsync(a, new Request { Type = Request.Types.Type.Pubsub, Pubsub = new PSRequest { Type = PSRequest.Types.Type.Publish, Topic = "t", Data = ByteString.CopyFromUtf8("hi") } }, ct);
        Assert.That(published.Type, Is.EqualTo(Response.Types.Type.Ok));

        var message = await subscriber.ReadAsync(PSMessage.Parser, ct);
        Assert.That(message.Data.ToStringUtf8(), Is.EqualTo("hi"));
        Assert.That(message.From.ToByteArray(), Is.EqualTo(a.Node.PeerId.ToBytes()));
        Assert.That(message.TopicIDs, Is.EqualTo(new[] { "t" }));
    }

    // ---------------------------------------------------------------- a client that lies, floods or stalls

    private static async Task<(Response? Response, bool Closed)> RawAsync(P2pdDaemon daemon, byte[] bytes, CancellationToken ct)
    {
        await using var control = await Control.OpenAsync(daemon, ct);
        await control.Stream.WriteAsync(bytes, ct);
        var response = await control.ReadAsync(Response.Parser, ct);
        var rest = new byte[1];
        var closed = await control.Stream.ReadAsync(rest, ct) == 0;
        return (response, closed);
    }

    [Test]
    public async Task Malformed_NotAProtobuf_GetsAnErrorAndTheConnectionCloses(CancellationToken ct)
    {
        var daemon = await StartAsync();
        var (response, closed) = await RawAsync(daemon, [0x04, 0xff, 0xff, 0xff, 0xff], ct);
        Assert.That(response!.Type, Is.EqualTo(Response.Types.Type.Error));
        Assert.That(response.Error.Msg, Does.Contain("malformed request"));
        Assert.That(closed, Is.True);
        Assert.That((await RequestAsync(daemon, Identify(), ct)).Type, Is.EqualTo(Response.Types.Type.Ok), "still serving");
    }

    [Test]
    public async Task Malformed_LengthOverTheLimit_IsRefusedBeforeReadingIt(CancellationToken ct)
    {
        var daemon = await StartAsync();
        var header = new byte[10];
        var n = Varint.Write(header, 1UL << 40); // a terabyte announced, nothing sent
        var (response, closed) = await RawAsync(daemon, header[..n], ct);
        Assert.That(response!.Type, Is.EqualTo(Response.Types.Type.Error));
        Assert.That(response.Error.Msg, Does.Contain("limit"));
        Assert.That(closed, Is.True);
    }

    [TestCase(6, "CONNMANAGER is not supported")]
    [TestCase(9, "PEERSTORE is not supported")]
    [TestCase(4, "DHT not enabled")]
    [TestCase(8, "PubSub not enabled")]
    [TestCase(1, "CONNECT needs a peer")]
    [TestCase(2, "STREAM_OPEN needs a peer")]
    [TestCase(3, "STREAM_HANDLER needs an address")]
    [TestCase(7, "DISCONNECT needs a peer id")]
    public async Task Unsupported_OrIncomplete_GetsAnErrorSayingSo_AndTheConnectionStaysUsable(int type, string why)
    {
        var ct = TestContext.CurrentContext.CancellationToken;
        var daemon = await StartAsync();
        await using var control = await Control.OpenAsync(daemon, ct);
        var response = await control.SendAsync(new Request { Type = (Request.Types.Type)type }, ct);
        Assert.That(response.Type, Is.EqualTo(Response.Types.Type.Error));
        Assert.That(response.Error.Msg, Does.Contain(why));
        Assert.That((await control.SendAsync(Identify(), ct)).Type, Is.EqualTo(Response.Types.Type.Ok), "same connection, next request");
    }

    [Test]
    public async Task Dht_UnsupportedQuery_IsRefusedNotHung(CancellationToken ct)
    {
        var daemon = await StartAsync("-dht");
        var response = await RequestAsync(daemon, new Request
        {
            Type = Request.Types.Type.Dht,
            Dht = new DHTRequest { Type = DHTRequest.Types.Type.GetPublicKey, Peer = ByteString.CopyFrom(daemon.Node.PeerId.Bytes) },
        }, ct);
        Assert.That(response.Type, Is.EqualTo(Response.Types.Type.Error));
        Assert.That(response.Error.Msg, Does.Contain("not supported"));
    }

    [Test]
    public async Task Connect_ToAnAddressNobodyListensOn_FailsWithinItsTimeout(CancellationToken ct)
    {
        var daemon = await StartAsync();
        var stranger = PrivateKey.Generate().PeerId;
        var response = await RequestAsync(daemon, new Request
        {
            Type = Request.Types.Type.Connect,
            Connect = new ConnectRequest
            {
                Peer = ByteString.CopyFrom(stranger.Bytes),
                Addrs = { ByteString.CopyFrom(Multiaddr.Parse("/ip4/127.0.0.1/tcp/1").Bytes.Span) },
                Timeout = 5,
            },
        }, ct);
        Assert.That(response.Type, Is.EqualTo(Response.Types.Type.Error));
        Assert.That(response.Error.Msg, Does.Contain(stranger.ToString()));
        Assert.That(await ListPeersAsync(daemon, ct), Is.Empty);
    }

    [Test]
    public async Task StalledClients_DoNotKeepOthersWaiting(CancellationToken ct)
    {
        var daemon = await StartAsync();
        var stalled = new List<Control>();
        for (var i = 0; i < 20; i++)
        {
            var c = await Control.OpenAsync(daemon, ct);
            await c.Stream.WriteAsync(new byte[] { 0x80 }, ct); // half a length prefix, then nothing
            stalled.Add(c);
        }
        try
        {
            Assert.That((await RequestAsync(daemon, Identify(), ct)).Type, Is.EqualTo(Response.Types.Type.Ok));
        }
        finally
        {
            foreach (var c in stalled)
            {
                await c.DisposeAsync();
            }
        }
    }
}
