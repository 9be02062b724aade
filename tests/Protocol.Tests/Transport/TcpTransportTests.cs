using System.Net;
using System.Net.Sockets;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Transport;
using Potluck.Protocol.Transport.Tcp;

namespace Potluck.Protocol.Tests.Transport;

public sealed class TcpTransportTests
{
    private static readonly Multiaddr Loopback = Multiaddr.Parse("/ip4/127.0.0.1/tcp/0");

    /// <summary>A listener on loopback and one connection to it: <see cref="Client"/> dialled, <see cref="Server"/> accepted. Disposing it closes both ends, then the listener.</summary>
    private sealed record ConnectedPair(IListener Listener, IRawConnection Client, IRawConnection Server) : IAsyncDisposable
    {
        public void Deconstruct(out IRawConnection client, out IRawConnection server) => (client, server) = (Client, Server);

        public async ValueTask DisposeAsync()
        {
            await Server.DisposeAsync();
            await Client.DisposeAsync();
            await Listener.DisposeAsync();
        }
    }

    /// <summary>The setup most tests share: a transport with default options, listening on loopback, dialled by itself.</summary>
    private static async Task<ConnectedPair> ConnectAsync()
    {
        var transport = new TcpTransport(new TcpTransportOptions(), NodeRuntime.System);
        var listener = await transport.ListenAsync(Loopback, CancellationToken.None);
        var accept = listener.AcceptAsync(CancellationToken.None).AsTask();
        var client = await transport.DialAsync(listener.Address, CancellationToken.None).Guarded();
        var server = await accept.Guarded();
        return new ConnectedPair(listener, client, server);
    }

    [Test]
    public async Task DialAccept_Echo10MiB_ReturnsEveryByte()
    {
        await using var pair = await ConnectAsync();
        var (client, server) = pair;

        var data = PipeTestExtensions.RandomBytes(10 * 1024 * 1024, seed: 1);
        var echo = PipeTestExtensions.EchoAsync(server.Input, server.Output);
        var write = PipeTestExtensions.WriteAllAsync(client.Output, data, chunk: 100_000);
        var received = await client.Input.ReadToEndAsync().Guarded();
        await write.Guarded();
        await echo.Guarded();

        Assert.That(received.Length, Is.EqualTo(data.Length));
        Assert.That(received.AsSpan().SequenceEqual(data), Is.True);
    }

    [Test]
    public async Task Listen_Port0_ReportsTheRealPortAndBothEndsAgreeOnAddresses()
    {
        await using var pair = await ConnectAsync();
        var (listener, client, server) = pair;

        var port = listener.Address.ToTcpEndPoint()!.Port;
        Assert.That(port, Is.Not.Zero);
        Assert.That(listener.Address.ToString(), Is.EqualTo($"/ip4/127.0.0.1/tcp/{port}"));
        Assert.That(client.Remote, Is.EqualTo(listener.Address));
        Assert.That(server.Local, Is.EqualTo(listener.Address));
        Assert.That(server.Remote, Is.EqualTo(client.Local));
        Assert.That(client.Local.ToTcpEndPoint()!.Address, Is.EqualTo(IPAddress.Loopback));
        Assert.That(client.Local.ToTcpEndPoint()!.Port, Is.Not.Zero.And.Not.EqualTo(port));
    }

    [Test]
    public async Task Dial_NothingListening_ThrowsConnectionRefusedWithTheAddress()
    {
        var transport = new TcpTransport(new TcpTransportOptions(), NodeRuntime.System);
        var listener = await transport.ListenAsync(Loopback, CancellationToken.None);
        var address = listener.Address;
        await listener.DisposeAsync();

        var e = Assert.ThrowsAsync<TransportException>(async () => await transport.DialAsync(address, CancellationToken.None));
        Assert.That(e!.Error, Is.EqualTo(TransportError.ConnectionRefused));
        Assert.That(e.Address, Is.EqualTo(address));
        Assert.That(e.Message, Does.Contain(address.ToString()).And.Contain("connection refused"));
        Assert.That(e, Is.InstanceOf<IOException>());
    }

    [Test]
    public async Task Dial_WithPeerSuffix_IgnoresThePeerAndConnects()
    {
        var transport = new TcpTransport(new TcpTransportOptions(), NodeRuntime.System);
        await using var listener = await transport.ListenAsync(Loopback, CancellationToken.None);
        var peer = PrivateKey.FromSeed(new byte[32]).PeerId;
        var accept = listener.AcceptAsync(CancellationToken.None).AsTask();
        await using var client = await transport.DialAsync(listener.Address.WithPeer(peer), CancellationToken.None).Guarded();
        await using var server = await accept.Guarded();
        Assert.That(client.Remote, Is.EqualTo(listener.Address));
    }

    [Test]
    public async Task Dial_Dns4Localhost_ResolvesAndConnects()
    {
        var transport = new TcpTransport(new TcpTransportOptions(), NodeRuntime.System);
        await using var listener = await transport.ListenAsync(Loopback, CancellationToken.None);
        var port = listener.Address.ToTcpEndPoint()!.Port;
        var accept = listener.AcceptAsync(CancellationToken.None).AsTask();
        await using var client = await transport.DialAsync(Multiaddr.Parse($"/dns4/localhost/tcp/{port}"), CancellationToken.None).Guarded();
        await using var server = await accept.Guarded();
        Assert.That(client.Remote, Is.EqualTo(listener.Address));
    }

    [Test]
    public void Dial_AlreadyCancelled_ThrowsOperationCanceled()
    {
        var transport = new TcpTransport(new TcpTransportOptions(), NodeRuntime.System);
        Assert.CatchAsync<OperationCanceledException>(async () =>
            await transport.DialAsync(Multiaddr.Parse("/ip4/127.0.0.1/tcp/9"), new CancellationToken(canceled: true)));
    }

    [Test]
    public void Dial_NotATcpAddress_ThrowsUnsupportedAddress()
    {
        var transport = new TcpTransport(new TcpTransportOptions(), NodeRuntime.System);
        var e = Assert.ThrowsAsync<TransportException>(async () =>
            await transport.DialAsync(Multiaddr.Parse("/memory/5"), CancellationToken.None));
        Assert.That(e!.Error, Is.EqualTo(TransportError.UnsupportedAddress));
    }

    [TestCase("/ip4/1.2.3.4/tcp/4001", true)]
    [TestCase("/ip6/::1/tcp/4001", true)]
    [TestCase("/dns/example.com/tcp/4001", true)]
    [TestCase("/dns4/example.com/tcp/4001", true)]
    [TestCase("/dns6/example.com/tcp/4001", true)]
    [TestCase("/ip4/1.2.3.4/udp/4001/quic-v1", false)]
    [TestCase("/ip4/1.2.3.4", false)]
    [TestCase("/memory/3", false)]
    [TestCase("/dnsaddr/example.com/tcp/4001", false)]
    [TestCase("/ip4/1.2.3.4/tcp/4001/p2p-circuit", false)]
    public void CanHandle_AcceptsTcpAddressesOnly(string address, bool expected)
    {
        var transport = new TcpTransport(new TcpTransportOptions(), NodeRuntime.System);
        var parsed = Multiaddr.Parse(address);
        Assert.That(transport.CanHandle(parsed), Is.EqualTo(expected));
        Assert.That(transport.CanHandle(parsed.WithPeer(PrivateKey.FromSeed(new byte[32]).PeerId)), Is.EqualTo(expected));
    }

    [Test]
    public async Task Listen_SamePortTwice_ThrowsAddressInUse()
    {
        var transport = new TcpTransport(new TcpTransportOptions(), NodeRuntime.System);
        await using var listener = await transport.ListenAsync(Loopback, CancellationToken.None);
        var e = Assert.ThrowsAsync<TransportException>(async () => await transport.ListenAsync(listener.Address, CancellationToken.None));
        Assert.That(e!.Error, Is.EqualTo(TransportError.AddressInUse));
    }

    [Test]
    public async Task HolePunchDial_LeavesFromTheListenPort_AndOrdinaryDialsDoNot()
    {
        var a = new TcpTransport(new TcpTransportOptions(), NodeRuntime.System);
        var b = new TcpTransport(new TcpTransportOptions(), NodeRuntime.System);
        await using var listenerA = await a.ListenAsync(Loopback, CancellationToken.None);
        await using var listenerB = await b.ListenAsync(Loopback, CancellationToken.None);

        var accept = listenerB.AcceptAsync(CancellationToken.None).AsTask();
        await using var punched = await a.DialFromListenPortAsync(listenerB.Address, CancellationToken.None).Guarded();
        await using var accepted = await accept.Guarded();
        Assert.That(punched.Local, Is.EqualTo(listenerA.Address), "the NAT mapping peers observed for the listen port is the one used");
        Assert.That(accepted.Remote, Is.EqualTo(listenerA.Address));

        var acceptOrdinary = listenerB.AcceptAsync(CancellationToken.None).AsTask();
        await using var ordinary = await a.DialAsync(listenerB.Address, CancellationToken.None).Guarded();
        await using var acceptedOrdinary = await acceptOrdinary.Guarded();
        Assert.That(ordinary.Local, Is.Not.EqualTo(listenerA.Address));

        // The listener shares its port only with its own dials: a second listener there is still refused.
        var e = Assert.ThrowsAsync<TransportException>(async () => await b.ListenAsync(listenerA.Address, CancellationToken.None));
        Assert.That(e!.Error, Is.EqualTo(TransportError.AddressInUse));
    }

    [Test]
    public async Task RemoteCompletesOutput_CompletesOurInputAfterTheData()
    {
        await using var pair = await ConnectAsync();
        var (client, server) = pair;

        await client.Output.WriteAndFlushAsync("bye"u8.ToArray());
        await client.Output.CompleteAsync();

        var received = await server.Input.ReadToEndAsync().Guarded();
        Assert.That(received, Is.EqualTo("bye"u8.ToArray()));
    }

    [Test]
    public async Task RemoteDispose_DeliversFlushedBytesThenCompletesOurInput()
    {
        await using var pair = await ConnectAsync();
        var (client, server) = pair;

        var data = PipeTestExtensions.RandomBytes(256 * 1024, seed: 2);
        await server.Output.WriteAndFlushAsync(data);
        await server.DisposeAsync();

        var received = await client.Input.ReadToEndAsync().Guarded();
        Assert.That(received.AsSpan().SequenceEqual(data), Is.True);
    }

    [Test]
    public async Task Dispose_WhileReadPending_CompletesTheRead()
    {
        await using var pair = await ConnectAsync();
        var (client, server) = pair;

        var read = client.Input.ReadAsync().AsTask();
        Assert.That(read.IsCompleted, Is.False);
        await client.DisposeAsync().AsTask().Guarded();

        var result = await read.Guarded();
        Assert.That(result.IsCompleted, Is.True);
        client.Input.AdvanceTo(result.Buffer.End);
        var flush = await client.Output.WriteAsync(new byte[] { 1 });
        Assert.That(flush.IsCompleted, Is.True, "flushes after disposal report IsCompleted");
    }

    [Test]
    public async Task Dispose_Twice_IsHarmless()
    {
        var (listener, client, server) = await ConnectAsync(); // no await using: disposing is what this test does

        var first = client.DisposeAsync().AsTask();
        var second = client.DisposeAsync().AsTask();
        await Task.WhenAll(first, second).Guarded();
        await client.DisposeAsync();
        await server.DisposeAsync();
        await server.DisposeAsync();
        await listener.DisposeAsync();
        await listener.DisposeAsync();
        Assert.That(first.IsCompletedSuccessfully && second.IsCompletedSuccessfully, Is.True);
    }

    [Test]
    public async Task ListenerDispose_FailsPendingAndLaterAcceptsWithOperationCanceled()
    {
        var transport = new TcpTransport(new TcpTransportOptions(), NodeRuntime.System);
        var listener = await transport.ListenAsync(Loopback, CancellationToken.None);
        var pending = listener.AcceptAsync(CancellationToken.None).AsTask();
        await listener.DisposeAsync();

        Assert.CatchAsync<OperationCanceledException>(async () => await pending.Guarded());
        Assert.CatchAsync<OperationCanceledException>(async () => await listener.AcceptAsync(CancellationToken.None));
        var e = Assert.ThrowsAsync<TransportException>(async () => await transport.DialAsync(listener.Address, CancellationToken.None));
        Assert.That(e!.Error, Is.EqualTo(TransportError.ConnectionRefused));
    }

    [Test]
    public async Task Accept_Cancelled_ThrowsOperationCanceled()
    {
        var transport = new TcpTransport(new TcpTransportOptions(), NodeRuntime.System);
        await using var listener = await transport.ListenAsync(Loopback, CancellationToken.None);
        using var cts = new CancellationTokenSource();
        var pending = listener.AcceptAsync(cts.Token).AsTask();
        await cts.CancelAsync();
        Assert.CatchAsync<OperationCanceledException>(async () => await pending.Guarded());
    }

    [Test]
    public async Task RemoteReset_FailsOurReadWithConnectionReset()
    {
        var transport = new TcpTransport(new TcpTransportOptions(), NodeRuntime.System);
        await using var listener = await transport.ListenAsync(Loopback, CancellationToken.None);
        var accept = listener.AcceptAsync(CancellationToken.None).AsTask();
        using var raw = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await raw.ConnectAsync(listener.Address.ToTcpEndPoint()!);
        await using var server = await accept.Guarded();

        raw.LingerState = new LingerOption(true, 0); // close with RST
        raw.Close();

        var e = Assert.CatchAsync<IOException>(async () => await server.Input.ReadToEndAsync().Guarded());
        Assert.That(e, Is.InstanceOf<TransportException>());
        Assert.That(((TransportException)e!).Error, Is.EqualTo(TransportError.ConnectionReset));
    }

    [Test]
    public async Task Ipv6Loopback_DialAcceptEcho()
    {
        var transport = new TcpTransport(new TcpTransportOptions(), NodeRuntime.System);
        IListener listener;
        try
        {
            listener = await transport.ListenAsync(Multiaddr.Parse("/ip6/::1/tcp/0"), CancellationToken.None);
        }
        catch (TransportException e) when (!Socket.OSSupportsIPv6 || e.Error is TransportError.AddressNotAvailable or TransportError.UnsupportedAddress)
        {
            Assert.Ignore($"IPv6 loopback is not available here: {e.Message}");
            return;
        }
        await using var _ = listener;
        Assert.That(listener.Address.ToString(), Does.StartWith("/ip6/::1/tcp/"));
        var accept = listener.AcceptAsync(CancellationToken.None).AsTask();
        await using var client = await transport.DialAsync(listener.Address, CancellationToken.None).Guarded();
        await using var server = await accept.Guarded();
        Assert.That(client.Local.ToString(), Does.StartWith("/ip6/::1/tcp/"));

        var echo = PipeTestExtensions.EchoAsync(server.Input, server.Output);
        await client.Output.WriteAndFlushAsync("ping"u8.ToArray());
        await client.Output.CompleteAsync();
        Assert.That(await client.Input.ReadToEndAsync().Guarded(), Is.EqualTo("ping"u8.ToArray()));
        await echo.Guarded();
    }

    [Test]
    public void Options_Invalid_AreRejected()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => _ = new TcpTransport(new TcpTransportOptions { ListenBacklog = 0 }, NodeRuntime.System));
        Assert.Throws<ArgumentOutOfRangeException>(() => _ = new TcpTransport(new TcpTransportOptions { ResumeWriterThreshold = 2 * 1024 * 1024 }, NodeRuntime.System));
        Assert.Throws<ArgumentOutOfRangeException>(() => _ = new TcpTransport(new TcpTransportOptions { ConnectTimeout = TimeSpan.Zero }, NodeRuntime.System));
    }
}
