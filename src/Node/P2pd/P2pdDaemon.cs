using System.Buffers;
using System.Collections.Concurrent;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using Google.Protobuf;
using Microsoft.Extensions.Logging;
using Potluck.Node.P2pd.Pb;
using Potluck.Protocol;
using Potluck.Protocol.Framing;
using Potluck.Protocol.Gossipsub;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;
using PeerInfo = Potluck.Node.P2pd.Pb.PeerInfo;

namespace Potluck.Node.P2pd;

/// <summary>Limits of the control protocol. The control socket is meant for a local harness, yet nothing it sends is trusted beyond these.</summary>
internal sealed record P2pdLimits
{
    /// <summary>Largest request (go-libp2p's network.MessageSizeMax). Default 4 MiB.</summary>
    public int MaxRequestSize { get; init; } = 4 << 20;

    /// <summary>Control connections served at once; more wait in the accept backlog. Default 256.</summary>
    public int MaxControlConnections { get; init; } = 256;

    /// <summary>Protocols one STREAM_OPEN or STREAM_HANDLER request may name. Default 64.</summary>
    public int MaxProtocolsPerRequest { get; init; } = 64;

    /// <summary>Protocols with a registered handler. Default 1,024.</summary>
    public int MaxHandlers { get; init; } = 1024;

    /// <summary>Addresses one CONNECT may give. Default 64.</summary>
    public int MaxAddressesPerConnect { get; init; } = 64;

    /// <summary>Providers one FIND_PROVIDERS may ask for. Default 100 (go's default is 20).</summary>
    public int MaxProviders { get; init; } = 100;

    /// <summary>Pubsub topics subscribed through the daemon at once. Default 1,024.</summary>
    public int MaxTopics { get; init; } = 1024;

    /// <summary>A request's deadline when it names none (go's DefaultTimeout). Default 60 s.</summary>
    public TimeSpan DefaultTimeout { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>The longest deadline a request may ask for. Default 10 min.</summary>
    public TimeSpan MaxTimeout { get; init; } = TimeSpan.FromMinutes(10);

    /// <summary>How long a registered stream handler's address gets to accept our connection. Default 10 s.</summary>
    public TimeSpan HandlerDialTimeout { get; init; } = TimeSpan.FromSeconds(10);
}

/// <summary>
/// The libp2p daemon control protocol (https://github.com/libp2p/go-libp2p-daemon/blob/master/specs/CONTROL.md) in front
/// of a Potluck node: varint-delimited <c>Request</c>/<c>Response</c> protobufs, one TCP connection per request.
/// STREAM_OPEN continues with the stream's raw bytes on the same connection; for STREAM_HANDLER the daemon dials the
/// client's address for each inbound stream, writes a <c>StreamInfo</c>, then relays; SUBSCRIBE continues with one
/// <c>PSMessage</c> per message until the client hangs up; DHT queries that stream answer BEGIN, VALUEs, END.
/// Requests Potluck does not serve (CONNMANAGER, PEERSTORE, FIND_PEERS_CONNECTED_TO_PEER, GET_PUBLIC_KEY,
/// SEARCH_VALUE) get an ERROR response that says so and the connection stays usable; a request that is not a
/// protobuf, or too large, gets an ERROR and the connection is closed. Nothing a client sends can hang the daemon
/// beyond the request's deadline.
/// </summary>
internal sealed partial class P2pdDaemon : IAsyncDisposable
{
    public const string EchoProtocol = "/echo/1.0.0";
    private const string ControlName = "p2pd control";

    private readonly PotluckNode _node;
    private readonly P2pdLimits _limits;
    private readonly ILogger _log;
    private readonly Socket _listener;
    private readonly BackgroundWork _work;
    private readonly SemaphoreSlim _connectionSlots;
    private readonly ConcurrentDictionary<string, Multiaddr> _handlers = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, int> _topics = new(StringComparer.Ordinal);
    private readonly Lock _gate = new();

    private P2pdDaemon(PotluckNode node, Socket listener, P2pdLimits limits, ILogger log)
    {
        _node = node;
        _listener = listener;
        _limits = limits;
        _log = log;
        _work = node.Runtime.CreateBackgroundWork("p2pd", log);
        _connectionSlots = new SemaphoreSlim(limits.MaxControlConnections);
        ControlAddress = Multiaddr.FromTcpEndPoint((IPEndPoint)listener.LocalEndPoint!);
    }

    /// <summary>Where clients connect: the bound control address, with its port.</summary>
    public Multiaddr ControlAddress { get; }

    public PotluckNode Node => _node;

    /// <summary>Binds the control socket and starts serving it. <paramref name="echo"/>: answer /echo/1.0.0 ourselves until a client registers its own handler.</summary>
    public static P2pdDaemon Start(PotluckNode node, Multiaddr control, bool echo, P2pdLimits limits, ILogger log)
    {
        var endPoint = control.ToTcpEndPoint() ?? throw new ArgumentException($"the control address {control} is not TCP", nameof(control));
        var socket = new Socket(endPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            socket.Bind(endPoint);
            socket.Listen(128);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
        var daemon = new P2pdDaemon(node, socket, limits, log);
        if (echo)
        {
            node.Host.SetStreamHandler(EchoProtocol, EchoAsync);
        }
        daemon._work.Run("accept", daemon.AcceptLoopAsync);
        return daemon;
    }

    private static async Task EchoAsync(IStream stream, CancellationToken ct)
    {
        await stream.Input.CopyToAsync(stream.Output, ct);
        await stream.Output.CompleteAsync();
    }

    private async Task AcceptLoopAsync(CancellationToken stopping)
    {
        while (!stopping.IsCancellationRequested)
        {
            await _connectionSlots.WaitAsync(stopping);
            Socket client;
            try
            {
                client = await _listener.AcceptAsync(stopping);
            }
            catch
            {
                _connectionSlots.Release();
                throw;
            }
            _work.Run("control connection", async ct =>
            {
                try
                {
                    await ServeAsync(client, ct);
                }
                finally
                {
                    client.Dispose();
                    _connectionSlots.Release();
                }
            });
        }
    }

    // ------------------------------------------------------------------ one control connection

    private async Task ServeAsync(Socket socket, CancellationToken stopping)
    {
        socket.NoDelay = true;
        await using var stream = new NetworkStream(socket, ownsSocket: false);
        var reader = PipeReader.Create(stream);
        var writer = PipeWriter.Create(stream);
        try
        {
            while (true)
            {
                byte[]? bytes;
                try
                {
                    bytes = await LengthPrefixed.ReadAsync(reader, _limits.MaxRequestSize, ControlName, stopping);
                }
                catch (Potluck.Protocol.ProtocolViolationException e)
                {
                    await WriteAsync(writer, Error($"malformed request: {e.Message}"), stopping);
                    return;
                }
                if (bytes is null)
                {
                    return; // the client is done
                }
                Request request;
                try
                {
                    request = Request.Parser.ParseFrom(bytes);
                }
                catch (InvalidProtocolBufferException e)
                {
                    await WriteAsync(writer, Error($"malformed request: {e.Message}"), stopping);
                    return;
                }
                LogRequest(request.Type);
                var next = await HandleAsync(request, socket, reader, writer, stopping);
                if (next == After.Close)
                {
                    return;
                }
            }
        }
        catch (Exception e) when (Failures.IsExpected(e) || e is IOException or SocketException)
        {
            LogConnectionEnded(e.Message); // the client went away, or we are stopping
        }
        finally
        {
            await reader.CompleteAsync();
            await writer.CompleteAsync();
        }
    }

    private enum After { Continue, Close }

    private async Task<After> HandleAsync(Request request, Socket socket, PipeReader reader, PipeWriter writer, CancellationToken stopping)
    {
        switch (request.Type)
        {
            case Request.Types.Type.Identify:
                await WriteAsync(writer, Identify(), stopping);
                return After.Continue;
            case Request.Types.Type.Connect:
                await WriteAsync(writer, await ConnectAsync(request.Connect, stopping), stopping);
                return After.Continue;
            case Request.Types.Type.StreamOpen:
                return await StreamOpenAsync(request.StreamOpen, socket, reader, writer, stopping);
            case Request.Types.Type.StreamHandler:
                await WriteAsync(writer, StreamHandler(request.StreamHandler), stopping);
                return After.Continue;
            case Request.Types.Type.Dht:
                return await DhtAsync(request.Dht, writer, stopping);
            case Request.Types.Type.ListPeers:
                await WriteAsync(writer, ListPeers(), stopping);
                return After.Continue;
            case Request.Types.Type.Disconnect:
                await WriteAsync(writer, await DisconnectAsync(request.Disconnect), stopping);
                return After.Continue;
            case Request.Types.Type.Pubsub:
                return await PubsubAsync(request.Pubsub, reader, writer, stopping);
            case Request.Types.Type.Connmanager:
                await WriteAsync(writer, Error("CONNMANAGER is not supported by potluck p2pd (tags and trimming are the node's own)"), stopping);
                return After.Continue;
            case Request.Types.Type.Peerstore:
                await WriteAsync(writer, Error("PEERSTORE is not supported by potluck p2pd"), stopping);
                return After.Continue;
            default:
                await WriteAsync(writer, Error($"unknown request type {(int)request.Type}"), stopping);
                return After.Close;
        }
    }

    private Response Identify()
    {
        var response = Ok();
        response.Identify = new IdentifyResponse { Id = ByteString.CopyFrom(_node.PeerId.Bytes) };
        foreach (var address in _node.Host.ListenAddresses)
        {
            response.Identify.Addrs.Add(ByteString.CopyFrom(address.Bytes.Span));
        }
        return response;
    }

    private async Task<Response> ConnectAsync(ConnectRequest? connect, CancellationToken stopping)
    {
        if (connect is null || !connect.HasPeer)
        {
            return Error("malformed request: CONNECT needs a peer");
        }
        if (!PeerId.TryFromBytes(connect.Peer.Span, out var peer))
        {
            return Error("malformed request: the peer is not a peer id");
        }
        if (connect.Addrs.Count > _limits.MaxAddressesPerConnect)
        {
            return Error($"malformed request: over {_limits.MaxAddressesPerConnect} addresses");
        }
        var addresses = new List<Multiaddr>();
        foreach (var bytes in connect.Addrs)
        {
            if (!Multiaddr.TryFromBytes(bytes.Span, out var address))
            {
                return Error("malformed request: an address is not a multiaddr");
            }
            addresses.Add(address);
        }
        if (peer == _node.PeerId)
        {
            return Error("cannot connect to ourselves");
        }
        using var deadline = Deadline(connect.HasTimeout ? connect.Timeout : 0, stopping);
        try
        {
            _node.Host.Peers.AddAddresses(peer, addresses, AddressSource.Manual);
            await _node.Host.ConnectAsync(peer, deadline.Token);
            return Ok();
        }
        catch (Exception e) when (Failed(e, stopping))
        {
            return Error($"failed to connect to {peer}: {e.Message}");
        }
    }

    private async Task<After> StreamOpenAsync(StreamOpenRequest? open, Socket socket, PipeReader reader, PipeWriter writer, CancellationToken stopping)
    {
        if (open is null || !open.HasPeer || open.Proto.Count == 0 || open.Proto.Count > _limits.MaxProtocolsPerRequest
            || open.Proto.Any(p => p.Length is 0 or > 1024))
        {
            await WriteAsync(writer, Error($"malformed request: STREAM_OPEN needs a peer and 1 to {_limits.MaxProtocolsPerRequest} protocols"), stopping);
            return After.Continue;
        }
        if (!PeerId.TryFromBytes(open.Peer.Span, out var peer))
        {
            await WriteAsync(writer, Error("malformed request: the peer is not a peer id"), stopping);
            return After.Continue;
        }
        IStream stream;
        using (var deadline = Deadline(open.HasTimeout ? open.Timeout : 0, stopping))
        {
            try
            {
                stream = await _node.Host.NewStreamAsync(peer, [.. open.Proto], deadline.Token);
            }
            catch (Exception e) when (Failed(e, stopping))
            {
                await WriteAsync(writer, Error($"failed to open a stream to {peer}: {e.Message}"), stopping);
                return After.Continue;
            }
        }
        await using (stream)
        {
            var response = Ok();
            response.StreamInfo = Info(stream);
            try
            {
                await WriteAsync(writer, response, stopping);
            }
            catch
            {
                stream.Reset();
                throw;
            }
            await RelayAsync(stream, socket, reader, writer, stopping);
        }
        return After.Close;
    }

    private Response StreamHandler(StreamHandlerRequest? request)
    {
        if (request is null || !request.HasAddr || request.Proto.Count == 0 || request.Proto.Count > _limits.MaxProtocolsPerRequest
            || request.Proto.Any(p => p.Length is 0 or > 1024))
        {
            return Error($"malformed request: STREAM_HANDLER needs an address and 1 to {_limits.MaxProtocolsPerRequest} protocols");
        }
        if (!Multiaddr.TryFromBytes(request.Addr.Span, out var address) || address.ToTcpEndPoint() is null)
        {
            return Error("malformed request: the handler address must be a TCP multiaddr");
        }
        lock (_gate)
        {
            if (_handlers.Count + request.Proto.Count(p => !_handlers.ContainsKey(p)) > _limits.MaxHandlers)
            {
                return Error($"too many stream handlers (the limit is {_limits.MaxHandlers})");
            }
            foreach (var protocol in request.Proto)
            {
                _handlers[protocol] = address;
                _node.Host.SetStreamHandler(protocol, HandleInboundAsync);
                LogHandlerSet(protocol, address);
            }
        }
        return Ok();
    }

    /// <summary>An inbound stream for a protocol a client registered: dial the client, say which stream it is, relay.</summary>
    private async Task HandleInboundAsync(IStream stream, CancellationToken ct)
    {
        if (!_handlers.TryGetValue(stream.Protocol, out var address))
        {
            stream.Reset();
            return;
        }
        var endPoint = address.ToTcpEndPoint()!;
        using var socket = new Socket(endPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            using var timeout = new CancellationTokenSource(_limits.HandlerDialTimeout);
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(timeout.Token, ct);
            await socket.ConnectAsync(endPoint, linked.Token);
        }
        catch (Exception e) when (e is SocketException or OperationCanceledException)
        {
            LogHandlerUnreachable(stream.Protocol, address, e.Message);
            stream.Reset();
            return;
        }
        await using var network = new NetworkStream(socket, ownsSocket: false);
        var reader = PipeReader.Create(network);
        var writer = PipeWriter.Create(network);
        try
        {
            await WriteAsync(writer, Info(stream), ct);
            await RelayAsync(stream, socket, reader, writer, ct);
        }
        finally
        {
            await reader.CompleteAsync();
            await writer.CompleteAsync();
        }
    }

    /// <summary>
    /// Relays bytes both ways between a control connection and a libp2p stream, each direction half-closing the
    /// other side when it ends (as go's daemon does); a failure either way resets the stream.
    /// </summary>
    private static async Task RelayAsync(IStream stream, Socket socket, PipeReader fromClient, PipeWriter toClient, CancellationToken ct)
    {
        async Task ClientToStreamAsync()
        {
            try
            {
                await fromClient.CopyToAsync(stream.Output, ct);
                await stream.Output.CompleteAsync();
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                stream.Reset();
            }
        }

        async Task StreamToClientAsync()
        {
            try
            {
                await stream.Input.CopyToAsync(toClient, ct);
                await toClient.FlushAsync(ct);
                socket.Shutdown(SocketShutdown.Send);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                stream.Reset();
                try
                {
                    socket.Shutdown(SocketShutdown.Both);
                }
                catch (SocketException)
                {
                }
            }
        }

        await Task.WhenAll(ClientToStreamAsync(), StreamToClientAsync());
    }

    private Response ListPeers()
    {
        var response = Ok();
        foreach (var connection in _node.Host.Connections.Where(c => !c.IsClosed))
        {
            var info = new PeerInfo { Id = ByteString.CopyFrom(connection.RemotePeer.Bytes) };
            info.Addrs.Add(ByteString.CopyFrom(connection.RemoteAddress.Bytes.Span));
            response.Peers.Add(info);
        }
        return response;
    }

    private async Task<Response> DisconnectAsync(DisconnectRequest? request)
    {
        if (request is null || !request.HasPeer || !PeerId.TryFromBytes(request.Peer.Span, out var peer))
        {
            return Error("malformed request: DISCONNECT needs a peer id");
        }
        await _node.Host.DisconnectAsync(peer);
        return Ok();
    }

    // ------------------------------------------------------------------ DHT

    private async Task<After> DhtAsync(DHTRequest? request, PipeWriter writer, CancellationToken stopping)
    {
        if (!_node.Options.Protocols.Kademlia)
        {
            await WriteAsync(writer, Error("DHT not enabled"), stopping);
            return After.Continue;
        }
        if (request is null || !request.HasType)
        {
            await WriteAsync(writer, Error("malformed request: missing DHT parameters"), stopping);
            return After.Continue;
        }
        var dht = _node.Dht;
        using var deadline = Deadline(request.HasTimeout ? request.Timeout : 0, stopping);
        var ct = deadline.Token;
        try
        {
            switch (request.Type)
            {
                case DHTRequest.Types.Type.FindPeer:
                    {
                        if (!request.HasPeer || !PeerId.TryFromBytes(request.Peer.Span, out var peer))
                        {
                            await WriteAsync(writer, Error("malformed request: FIND_PEER needs a peer id"), stopping);
                            return After.Continue;
                        }
                        var addresses = await dht.FindPeerAsync(peer, ct);
                        if (addresses.Count == 0)
                        {
                            await WriteAsync(writer, Error($"peer {peer} not found"), stopping);
                            return After.Continue;
                        }
                        var response = Ok();
                        response.Dht = new DHTResponse { Type = DHTResponse.Types.Type.Value, Peer = ToPb(peer, addresses) };
                        await WriteAsync(writer, response, stopping);
                        return After.Continue;
                    }
                case DHTRequest.Types.Type.PutValue:
                    {
                        if (!request.HasKey || !request.HasValue)
                        {
                            await WriteAsync(writer, Error("malformed request: PUT_VALUE needs a key and a value"), stopping);
                            return After.Continue;
                        }
                        await dht.PutValueAsync(request.Key.ToByteArray(), request.Value.ToByteArray(), ct);
                        await WriteAsync(writer, Ok(), stopping);
                        return After.Continue;
                    }
                case DHTRequest.Types.Type.GetValue:
                    {
                        if (!request.HasKey)
                        {
                            await WriteAsync(writer, Error("malformed request: GET_VALUE needs a key"), stopping);
                            return After.Continue;
                        }
                        var value = await dht.GetValueAsync(request.Key.ToByteArray(), ct);
                        if (value is null)
                        {
                            await WriteAsync(writer, Error("routing: not found"), stopping);
                            return After.Continue;
                        }
                        var response = Ok();
                        response.Dht = new DHTResponse { Type = DHTResponse.Types.Type.Value, Value = ByteString.CopyFrom(value) };
                        await WriteAsync(writer, response, stopping);
                        return After.Continue;
                    }
                case DHTRequest.Types.Type.Provide:
                    {
                        if (!request.HasCid || !TryMultihashOfCid(request.Cid.Span, out var key))
                        {
                            await WriteAsync(writer, Error("malformed request: PROVIDE needs a CID"), stopping);
                            return After.Continue;
                        }
                        await dht.ProvideAsync(key, ct);
                        await WriteAsync(writer, Ok(), stopping);
                        return After.Continue;
                    }
                case DHTRequest.Types.Type.FindProviders:
                    {
                        if (!request.HasCid || !TryMultihashOfCid(request.Cid.Span, out var key))
                        {
                            await WriteAsync(writer, Error("malformed request: FIND_PROVIDERS needs a CID"), stopping);
                            return After.Continue;
                        }
                        var count = request.Count > 0 ? Math.Min(request.Count, _limits.MaxProviders) : 20;
                        var providers = await dht.FindProvidersAsync(key, count, ct);
                        await WriteStreamAsync(writer, providers.Select(p => new DHTResponse { Type = DHTResponse.Types.Type.Value, Peer = ToPb(p.Id, p.Addresses) }), stopping);
                        return After.Close;
                    }
                case DHTRequest.Types.Type.GetClosestPeers:
                    {
                        if (!request.HasKey)
                        {
                            await WriteAsync(writer, Error("malformed request: GET_CLOSEST_PEERS needs a key"), stopping);
                            return After.Continue;
                        }
                        var peers = await dht.GetClosestPeersAsync(request.Key.ToByteArray(), ct);
                        await WriteStreamAsync(writer, peers.Select(p => new DHTResponse { Type = DHTResponse.Types.Type.Value, Value = ByteString.CopyFrom(p.Bytes) }), stopping);
                        return After.Close;
                    }
                default:
                    await WriteAsync(writer, Error($"DHT {request.Type} is not supported by potluck p2pd"), stopping);
                    return After.Continue;
            }
        }
        catch (Exception e) when (Failed(e, stopping) || e is ArgumentException or Protocol.Kademlia.RecordValidationException or ResourceLimitException)
        {
            await WriteAsync(writer, Error($"DHT {request.Type}: {e.Message}"), stopping);
            return After.Continue;
        }
    }

    /// <summary>A streamed DHT answer: OK with BEGIN, each value, END.</summary>
    private static async Task WriteStreamAsync(PipeWriter writer, IEnumerable<DHTResponse> values, CancellationToken ct)
    {
        var begin = Ok();
        begin.Dht = new DHTResponse { Type = DHTResponse.Types.Type.Begin };
        Write(writer, begin);
        foreach (var value in values)
        {
            Write(writer, value);
        }
        Write(writer, new DHTResponse { Type = DHTResponse.Types.Type.End });
        await writer.FlushAsync(ct);
    }

    /// <summary>The multihash a CID names (the key the DHT's provider records use): a CIDv0 is one; a CIDv1 is version, codec, multihash.</summary>
    internal static bool TryMultihashOfCid(ReadOnlySpan<byte> cid, out byte[] multihash)
    {
        multihash = [];
        if (cid.Length is < 2 or > 256)
        {
            return false;
        }
        var rest = cid;
        if (!(cid[0] == 0x12 && cid[1] == 0x20))
        {
            if (Varint.TryRead(rest, out var version, out var n) != DecodeStatus.Done || version != 1)
            {
                return false;
            }
            rest = rest[n..];
            if (Varint.TryRead(rest, out _, out n) != DecodeStatus.Done)
            {
                return false;
            }
            rest = rest[n..];
        }
        // A multihash: code, digest length, digest of exactly that length.
        if (Varint.TryRead(rest, out _, out var codeLength) != DecodeStatus.Done
            || Varint.TryRead(rest[codeLength..], out var digestLength, out var lengthLength) != DecodeStatus.Done
            || (ulong)(rest.Length - codeLength - lengthLength) != digestLength)
        {
            return false;
        }
        multihash = rest.ToArray();
        return true;
    }

    private static PeerInfo ToPb(PeerId peer, IEnumerable<Multiaddr> addresses)
    {
        var info = new PeerInfo { Id = ByteString.CopyFrom(peer.Bytes) };
        foreach (var address in addresses)
        {
            info.Addrs.Add(ByteString.CopyFrom(address.Bytes.Span));
        }
        return info;
    }

    // ------------------------------------------------------------------ pubsub

    private async Task<After> PubsubAsync(PSRequest? request, PipeReader reader, PipeWriter writer, CancellationToken stopping)
    {
        if (!_node.Options.Protocols.Gossipsub)
        {
            await WriteAsync(writer, Error("PubSub not enabled"), stopping);
            return After.Continue;
        }
        if (request is null || !request.HasType)
        {
            await WriteAsync(writer, Error("malformed request: missing pubsub parameters"), stopping);
            return After.Continue;
        }
        var gossip = _node.Gossip;
        switch (request.Type)
        {
            case PSRequest.Types.Type.GetTopics:
                {
                    var response = Ok();
                    response.Pubsub = new PSResponse();
                    response.Pubsub.Topics.AddRange(_topics.Where(t => t.Value > 0).Select(t => t.Key).Order(StringComparer.Ordinal));
                    await WriteAsync(writer, response, stopping);
                    return After.Continue;
                }
            case PSRequest.Types.Type.ListPeers:
                {
                    if (!request.HasTopic)
                    {
                        await WriteAsync(writer, Error("malformed request: LIST_PEERS needs a topic"), stopping);
                        return After.Continue;
                    }
                    var response = Ok();
                    response.Pubsub = new PSResponse();
                    response.Pubsub.PeerIDs.AddRange(gossip.Peers(request.Topic).Select(p => ByteString.CopyFrom(p.Bytes)));
                    await WriteAsync(writer, response, stopping);
                    return After.Continue;
                }
            case PSRequest.Types.Type.Publish:
                {
                    if (!request.HasTopic)
                    {
                        await WriteAsync(writer, Error("malformed request: PUBLISH needs a topic"), stopping);
                        return After.Continue;
                    }
                    try
                    {
                        await gossip.PublishAsync(request.Topic, request.Data.Memory, stopping);
                        await WriteAsync(writer, Ok(), stopping);
                    }
                    catch (ArgumentException e)
                    {
                        await WriteAsync(writer, Error($"PUBLISH: {e.Message}"), stopping);
                    }
                    return After.Continue;
                }
            case PSRequest.Types.Type.Subscribe:
                {
                    if (!request.HasTopic || request.Topic.Length == 0)
                    {
                        await WriteAsync(writer, Error("malformed request: SUBSCRIBE needs a topic"), stopping);
                        return After.Continue;
                    }
                    if (!_topics.ContainsKey(request.Topic) && _topics.Count >= _limits.MaxTopics)
                    {
                        await WriteAsync(writer, Error($"too many topics (the limit is {_limits.MaxTopics})"), stopping);
                        return After.Continue;
                    }
                    GossipSubscription subscription;
                    try
                    {
                        subscription = gossip.Subscribe(request.Topic);
                    }
                    catch (ArgumentException e)
                    {
                        await WriteAsync(writer, Error($"SUBSCRIBE: {e.Message}"), stopping);
                        return After.Continue;
                    }
                    _topics.AddOrUpdate(request.Topic, 1, (_, n) => n + 1);
                    try
                    {
                        await WriteAsync(writer, Ok(), stopping);
                        await PipeSubscriptionAsync(subscription, reader, writer, stopping);
                    }
                    finally
                    {
                        subscription.Dispose();
                        _topics.AddOrUpdate(request.Topic, 0, (_, n) => n - 1);
                        _topics.TryRemove(KeyValuePair.Create(request.Topic, 0));
                    }
                    return After.Close;
                }
            default:
                await WriteAsync(writer, Error($"pubsub {request.Type} is not supported by potluck p2pd"), stopping);
                return After.Continue;
        }
    }

    /// <summary>Each message of the subscription as a PSMessage, until the client hangs up (anything it sends is ignored, as go does).</summary>
    private static async Task PipeSubscriptionAsync(GossipSubscription subscription, PipeReader reader, PipeWriter writer, CancellationToken stopping)
    {
        using var done = CancellationTokenSource.CreateLinkedTokenSource(stopping);
        var watch = Task.Run(async () =>
        {
            try
            {
                while (true)
                {
                    var result = await reader.ReadAsync(done.Token);
                    reader.AdvanceTo(result.Buffer.End);
                    if (result.IsCompleted)
                    {
                        break;
                    }
                }
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
            }
            await done.CancelAsync();
        });
        try
        {
            await foreach (var message in subscription.Messages.ReadAllAsync(done.Token))
            {
                var pb = new PSMessage { Data = ByteString.CopyFrom(message.Data.Span) };
                pb.TopicIDs.Add(message.Topic);
                if (message.Author is { } author)
                {
                    pb.From = ByteString.CopyFrom(author.Bytes);
                }
                if (message.SequenceNumber is { } seqno)
                {
                    var bytes = new byte[8];
                    System.Buffers.Binary.BinaryPrimitives.WriteUInt64BigEndian(bytes, seqno);
                    pb.Seqno = ByteString.CopyFrom(bytes);
                }
                Write(writer, pb);
                await writer.FlushAsync(done.Token);
            }
        }
        catch (OperationCanceledException) when (done.IsCancellationRequested)
        {
        }
        finally
        {
            await done.CancelAsync();
            await watch;
        }
    }

    // ------------------------------------------------------------------ helpers

    private static StreamInfo Info(IStream stream) => new()
    {
        Peer = ByteString.CopyFrom(stream.RemotePeer.Bytes),
        Addr = ByteString.CopyFrom(stream.Connection.RemoteAddress.Bytes.Span),
        Proto = stream.Protocol,
    };

    private CancellationTokenSource Deadline(long seconds, CancellationToken stopping)
    {
        var timeout = seconds > 0 ? TimeSpan.FromSeconds(Math.Min(seconds, _limits.MaxTimeout.TotalSeconds)) : _limits.DefaultTimeout;
        var cts = CancellationTokenSource.CreateLinkedTokenSource(stopping);
        cts.CancelAfter(timeout);
        return cts;
    }

    /// <summary>
    /// A failure to report to the client as an ERROR response: anything but our own shutdown. The peer, the network or
    /// a deadline is the usual cause; anything else is our bug, logged at Warning, and the client still gets an answer.
    /// </summary>
    private bool Failed(Exception e, CancellationToken stopping)
    {
        if (stopping.IsCancellationRequested || e is OutOfMemoryException)
        {
            return false;
        }
        if (Failures.Classify(e, stopping).Kind == FailureKind.Internal)
        {
            LogUnexpected(e);
        }
        return true;
    }

    private static Response Ok() => new() { Type = Response.Types.Type.Ok };

    private static Response Error(string message) => new() { Type = Response.Types.Type.Error, Error = new ErrorResponse { Msg = message } };

    private static void Write(PipeWriter writer, IMessage message)
    {
        var size = message.CalculateSize();
        var span = writer.GetSpan(Varint.MaxBytes + size);
        var n = Varint.Write(span, (ulong)size);
        message.WriteTo(span.Slice(n, size));
        writer.Advance(n + size);
    }

    private static async Task WriteAsync(PipeWriter writer, IMessage message, CancellationToken ct)
    {
        Write(writer, message);
        await writer.FlushAsync(ct);
    }

    public async ValueTask DisposeAsync()
    {
        _listener.Dispose();
        await _work.DisposeAsync();
        _connectionSlots.Dispose();
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "p2pd request failed unexpectedly")]
    private partial void LogUnexpected(Exception e);

    [LoggerMessage(Level = LogLevel.Debug, Message = "p2pd request {Type}")]
    private partial void LogRequest(Request.Types.Type type);

    [LoggerMessage(Level = LogLevel.Debug, Message = "p2pd control connection ended: {Reason}")]
    private partial void LogConnectionEnded(string reason);

    [LoggerMessage(Level = LogLevel.Debug, Message = "p2pd stream handler for {Protocol} at {Address}")]
    private partial void LogHandlerSet(string protocol, Multiaddr address);

    [LoggerMessage(Level = LogLevel.Debug, Message = "p2pd handler for {Protocol} at {Address} unreachable: {Reason}")]
    private partial void LogHandlerUnreachable(string protocol, Multiaddr address, string reason);
}
