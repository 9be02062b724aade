using System.Buffers;
using System.IO.Pipelines;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Transport;
using Potluck.Protocol.Transport.Memory;

namespace Potluck.Protocol.Tests.Transport;

public sealed class MemoryTransportTests
{
    private static readonly Multiaddr Any = Multiaddr.Parse("/memory/0");

    /// <summary>
    /// Transports A and B on one network, both listening, and one connection that A dialled to B's listen address:
    /// <see cref="Client"/> is A's end, <see cref="Server"/> the end B accepted. Disposing it closes both ends, then
    /// both listeners.
    /// </summary>
    private sealed record ConnectedPair(
        SimulatedNetwork Network, MemoryTransport A, IListener ListenerA, MemoryTransport B, IListener ListenerB,
        IRawConnection Client, IRawConnection Server) : IAsyncDisposable
    {
        public void Deconstruct(out IRawConnection client, out IRawConnection server) => (client, server) = (Client, Server);

        public async ValueTask DisposeAsync()
        {
            await Server.DisposeAsync();
            await Client.DisposeAsync();
            await ListenerB.DisposeAsync();
            await ListenerA.DisposeAsync();
        }
    }

    /// <summary>
    /// The setup most tests share (see <see cref="ConnectedPair"/>). With a driver <paramref name="d"/> the network runs
    /// on its virtual time, so bytes on a delayed link move only as the driver moves time; without one, on a clock
    /// nobody moves (perfect links only). A link's conditions are fixed when the connection opens, so they are set here,
    /// before the dial: <paramref name="link"/> between the two listen addresses, <paramref name="clientEndpoint"/> and
    /// <paramref name="serverEndpoint"/> on every link of A's or B's address. <paramref name="seed"/> draws which
    /// flushes a lossy link loses.
    /// </summary>
    private static async Task<ConnectedPair> ConnectAsync(
        VirtualTimeDriver? d = null, LinkConditions? link = null, LinkConditions? clientEndpoint = null,
        LinkConditions? serverEndpoint = null, long seed = 0)
    {
        var options = new SimulatedNetworkOptions { Seed = seed };
        var network = d is null
            ? new SimulatedNetwork(new VirtualClock(), options)
            : new SimulatedNetwork(d.Clock, options, d.Loop.PipeScheduler);
        var a = network.CreateTransport();
        var b = network.CreateTransport();
        var listenerA = await a.ListenAsync(Any, CancellationToken.None);
        var listenerB = await b.ListenAsync(Any, CancellationToken.None);
        if (link is not null)
        {
            network.SetLink(listenerA.Address, listenerB.Address, link);
        }
        if (clientEndpoint is not null)
        {
            network.SetEndpoint(listenerA.Address, clientEndpoint);
        }
        if (serverEndpoint is not null)
        {
            network.SetEndpoint(listenerB.Address, serverEndpoint);
        }
        var client = await a.DialAsync(listenerB.Address, CancellationToken.None);
        var server = await listenerB.AcceptAsync(CancellationToken.None).Guarded();
        return new ConnectedPair(network, a, listenerA, b, listenerB, client, server);
    }

    /// <summary>Delivery happens inside the timer that the clock fires, so the bytes must be readable without waiting.</summary>
    private static (byte[] Data, bool Completed) ReadNow(PipeReader reader)
    {
        Assert.That(reader.TryRead(out var result), Is.True, "readable as soon as the clock reached the delivery time");
        var data = result.Buffer.ToArray();
        reader.AdvanceTo(result.Buffer.End);
        return (data, result.IsCompleted);
    }

    [Test]
    public async Task DialAccept_Echo1MiB_ReturnsEveryByte()
    {
        await using var pair = await ConnectAsync();
        var (client, server) = pair;

        var data = PipeTestExtensions.RandomBytes(1024 * 1024 + 17, seed: 3);
        var echo = PipeTestExtensions.EchoAsync(server.Input, server.Output);
        var write = PipeTestExtensions.WriteAllAsync(client.Output, data, chunk: 10_000);
        var received = await client.Input.ReadToEndAsync().Guarded();
        await write.Guarded();
        await echo.Guarded();

        Assert.That(received.AsSpan().SequenceEqual(data), Is.True);
        await client.DisposeAsync();
        await server.DisposeAsync();
        Assert.That(pair.Network.ConnectionCount, Is.Zero);
    }

    [Test]
    public async Task Dial_NothingListening_ThrowsConnectionRefused()
    {
        var network = new SimulatedNetwork(new VirtualClock());
        var transport = network.CreateTransport();
        var address = Multiaddr.Parse("/memory/42");

        var e = Assert.ThrowsAsync<TransportException>(async () => await transport.DialAsync(address, CancellationToken.None));
        Assert.That(e!.Error, Is.EqualTo(TransportError.ConnectionRefused));
        Assert.That(e.Address, Is.EqualTo(address));
        Assert.That(e.Message, Does.Contain("/memory/42").And.Contain("connection refused"));
    }

    [Test]
    public async Task Listen_Memory0_AllocatesDistinctNonZeroAddresses()
    {
        var network = new SimulatedNetwork(new VirtualClock());
        var transport = network.CreateTransport();
        await using var a = await transport.ListenAsync(Any, CancellationToken.None);
        await using var b = await transport.ListenAsync(Any, CancellationToken.None);

        Assert.That(a.Address, Is.Not.EqualTo(b.Address));
        Assert.That(a.Address, Is.Not.EqualTo(Any));
        Assert.That(transport.CanHandle(a.Address), Is.True);
    }

    [Test]
    public async Task Listen_TakenAddress_ThrowsAddressInUse()
    {
        var network = new SimulatedNetwork(new VirtualClock());
        await using var first = await network.CreateTransport().ListenAsync(Multiaddr.Parse("/memory/7"), CancellationToken.None);
        var e = Assert.ThrowsAsync<TransportException>(async () =>
            await network.CreateTransport().ListenAsync(Multiaddr.Parse("/memory/7"), CancellationToken.None));
        Assert.That(e!.Error, Is.EqualTo(TransportError.AddressInUse));
    }

    [TestCase("/memory/1", true)]
    [TestCase("/memory/18446744073709551615", true)]
    [TestCase("/ip4/127.0.0.1/tcp/1", false)]
    [TestCase("/memory/1/tcp/5", false)]
    public void CanHandle_AcceptsMemoryAddressesOnly(string address, bool expected)
    {
        var transport = new SimulatedNetwork(new VirtualClock()).CreateTransport();
        var parsed = Multiaddr.Parse(address);
        Assert.That(transport.CanHandle(parsed), Is.EqualTo(expected));
        Assert.That(transport.CanHandle(parsed.WithPeer(PrivateKey.FromSeed(new byte[32]).PeerId)), Is.EqualTo(expected));
    }

    [Test]
    public async Task Addresses_DialerUsesItsListenAddress_OrOneEphemeralAddress()
    {
        var network = new SimulatedNetwork(new VirtualClock());
        var server = network.CreateTransport();
        var listeningDialer = network.CreateTransport();
        var silentDialer = network.CreateTransport();
        await using var serverListener = await server.ListenAsync(Any, CancellationToken.None);
        await using var dialerListener = await listeningDialer.ListenAsync(Any, CancellationToken.None);

        await using var c1 = await listeningDialer.DialAsync(serverListener.Address, CancellationToken.None);
        await using var s1 = await serverListener.AcceptAsync(CancellationToken.None).Guarded();
        Assert.That(c1.Local, Is.EqualTo(dialerListener.Address));
        Assert.That(c1.Remote, Is.EqualTo(serverListener.Address));
        Assert.That(s1.Local, Is.EqualTo(serverListener.Address));
        Assert.That(s1.Remote, Is.EqualTo(dialerListener.Address));

        await using var c2 = await silentDialer.DialAsync(serverListener.Address, CancellationToken.None);
        await using var c3 = await silentDialer.DialAsync(serverListener.Address, CancellationToken.None);
        Assert.That(c2.Local, Is.EqualTo(c3.Local), "one ephemeral address per transport");
        Assert.That(c2.Local, Is.Not.EqualTo(dialerListener.Address).And.Not.EqualTo(serverListener.Address));
        var e = Assert.ThrowsAsync<TransportException>(async () => await server.DialAsync(c2.Local, CancellationToken.None));
        Assert.That(e!.Error, Is.EqualTo(TransportError.ConnectionRefused), "nothing listens on an ephemeral address");
    }

    [Test]
    public void Latency_BytesBecomeReadableOnlyAfterTheLatencyOfVirtualTime() => VirtualTimeDriver.Run(async d =>
    {
        await using var pair = await ConnectAsync(d, link: new LinkConditions { Latency = TimeSpan.FromMilliseconds(50) });
        var (client, server) = pair;

        await client.Output.WriteAndFlushAsync("hello"u8.ToArray());
        await Task.Delay(TimeSpan.FromMilliseconds(49), d.Clock);
        Assert.That(server.Input.TryRead(out _), Is.False, "not readable before the latency");
        await Task.Delay(TimeSpan.FromMilliseconds(1), d.Clock);
        Assert.That(ReadNow(server.Input).Data, Is.EqualTo("hello"u8.ToArray()));

        // The other direction, and a second write while the first is in flight keeps its own delivery time.
        await server.Output.WriteAndFlushAsync("one"u8.ToArray());
        await Task.Delay(TimeSpan.FromMilliseconds(20), d.Clock);
        await server.Output.WriteAndFlushAsync("two"u8.ToArray());
        await Task.Delay(TimeSpan.FromMilliseconds(30), d.Clock);
        Assert.That(ReadNow(client.Input).Data, Is.EqualTo("one"u8.ToArray()), "only the first write is due");
        await Task.Delay(TimeSpan.FromMilliseconds(19), d.Clock);
        Assert.That(client.Input.TryRead(out _), Is.False, "the second write is still in flight");
        await Task.Delay(TimeSpan.FromMilliseconds(1), d.Clock);
        Assert.That(ReadNow(client.Input).Data, Is.EqualTo("two"u8.ToArray()));
    });

    [Test]
    public void Latency_ADeliveryToAWaitingReader_IsOneEvent_TheLinksTimer()
    {
        var driver = new VirtualTimeDriver();
        var digest = driver.DigestEvents();
        (long Events, long Items, long Timers, TimeSpan At, byte[] Data) seen = default;
        driver.RunUntilComplete(async d =>
        {
            await using var pair = await ConnectAsync(d, link: new LinkConditions { Latency = TimeSpan.FromMilliseconds(50) });
            var (client, server) = pair;

            var reading = server.Input.ReadAsync();
            Assert.That(reading.IsCompleted, Is.False, "the reader waits");
            await client.Output.WriteAndFlushAsync("hello"u8.ToArray());
            var sent = d.Clock.Elapsed;
            var (events, items, timers) = (digest.Count, d.Loop.ItemsRun, d.Clock.TimersFired);
            var result = await reading;
            seen = (digest.Count - events, d.Loop.ItemsRun - items, d.Clock.TimersFired - timers, d.Clock.Elapsed - sent, result.Buffer.ToArray());
            server.Input.AdvanceTo(result.Buffer.End);
        });

        Assert.That(seen.Data, Is.EqualTo("hello"u8.ToArray()));
        Assert.That(seen.At, Is.EqualTo(TimeSpan.FromMilliseconds(50)), "read exactly one latency after the flush");
        // The link's timer hands the bytes to the waiting reader, whose continuation runs within it: one event (it was
        // three: the clock's jump, the timer, and the reader's wake-up as an item of its own).
        Assert.That(seen.Timers, Is.EqualTo(1));
        Assert.That(seen.Items, Is.Zero);
        Assert.That(seen.Events, Is.EqualTo(1));
    }

    [Test]
    public void Latency_ADeliverySharingItsInstantWithAnEarlierTimer_WakesTheReaderAfterWhatThatTimerPosted() => VirtualTimeDriver.Run(async d =>
    {
        await using var pair = await ConnectAsync(d, link: new LinkConditions { Latency = TimeSpan.FromMilliseconds(50) });
        var (client, server) = pair;

        var order = new List<string>();
        var reading = server.Input.ReadAsync();
        // Due at the same instant as the delivery below and armed before it, so it fires first and posts an item.
        using var earlier = d.Clock.CreateTimer(_ => d.Loop.Post(_ => order.Add("posted by the earlier timer"), null), null,
            TimeSpan.FromMilliseconds(50), Timeout.InfiniteTimeSpan);
        await client.Output.WriteAndFlushAsync("hi"u8.ToArray());
        var result = await reading;
        order.Add("reader");
        server.Input.AdvanceTo(result.Buffer.End);
        await Task.Delay(TimeSpan.FromMilliseconds(1), d.Clock);

        // The reader's wake-up is posted behind that item, as it always was: waking it inline would run it first.
        Assert.That(order, Is.EqualTo(new[] { "posted by the earlier timer", "reader" }));
    });

    [Test]
    public void Latency_AReaderThatIsNotWaiting_FindsTheBytesOnItsNextRead() => VirtualTimeDriver.Run(async d =>
    {
        await using var pair = await ConnectAsync(d, link: new LinkConditions { Latency = TimeSpan.FromMilliseconds(5) });
        var (client, server) = pair;

        // Three flushes at three moments, nobody reading: each is due on its own, and all wait in order for the next read.
        for (var i = 0; i < 3; i++)
        {
            await client.Output.WriteAndFlushAsync(new[] { (byte)i });
            await Task.Delay(TimeSpan.FromMilliseconds(1), d.Clock);
        }
        await Task.Delay(TimeSpan.FromMilliseconds(10), d.Clock);
        Assert.That(ReadNow(server.Input).Data, Is.EqualTo(new byte[] { 0, 1, 2 }));
    });

    [Test]
    public void Latency_TheEndOfTheStreamTravelsBehindTheData() => VirtualTimeDriver.Run(async d =>
    {
        await using var pair = await ConnectAsync(d, serverEndpoint: new LinkConditions { Latency = TimeSpan.FromSeconds(1) });
        var (client, server) = pair;

        await client.Output.WriteAndFlushAsync("last words"u8.ToArray());
        await client.DisposeAsync();
        await Task.Delay(TimeSpan.FromMilliseconds(999), d.Clock);
        Assert.That(server.Input.TryRead(out _), Is.False, "neither the bytes nor the end arrived yet");
        await Task.Delay(TimeSpan.FromMilliseconds(1), d.Clock);
        var (data, completed) = ReadNow(server.Input);
        Assert.That(data, Is.EqualTo("last words"u8.ToArray()));
        Assert.That(completed, Is.True, "the end arrives with the last bytes");
    });

    [Test]
    public void Bandwidth_AFlushOccupiesTheLinkForItsSizeOverTheBandwidth_ThenTheLatency() => VirtualTimeDriver.Run(async d =>
    {
        // 1,000 bytes per second: 100 bytes take 100 ms to send, then 10 ms to travel.
        await using var pair = await ConnectAsync(d, link: new LinkConditions { Latency = TimeSpan.FromMilliseconds(10), BandwidthBytesPerSecond = 1000 });
        var (client, server) = pair;

        await client.Output.WriteAndFlushAsync(new byte[100]);
        await client.Output.WriteAndFlushAsync(new byte[50]); // queued behind the first: sent by 150 ms
        await Task.Delay(TimeSpan.FromMilliseconds(109), d.Clock);
        Assert.That(server.Input.TryRead(out _), Is.False, "the first flush is still being sent or in flight");
        await Task.Delay(TimeSpan.FromMilliseconds(1), d.Clock);
        Assert.That(ReadNow(server.Input).Data, Has.Length.EqualTo(100), "the first flush only, at 100 + 10 ms");
        await Task.Delay(TimeSpan.FromMilliseconds(49), d.Clock);
        Assert.That(server.Input.TryRead(out _), Is.False, "the second waits for the link");
        await Task.Delay(TimeSpan.FromMilliseconds(1), d.Clock);
        Assert.That(ReadNow(server.Input).Data, Has.Length.EqualTo(50), "the second at 150 + 10 ms");
    });

    /// <summary>Sends 200 one-byte flushes 1 ms apart over a lossy link; returns each byte's arrival time (ms) in order.</summary>
    private static List<long> LossyArrivals(long seed) => VirtualTimeDriver.Run(async d =>
    {
        await using var pair = await ConnectAsync(d, seed: seed, link: new LinkConditions
        {
            Latency = TimeSpan.FromMilliseconds(10), Loss = 0.1, RetransmitTimeout = TimeSpan.FromMilliseconds(50),
        });
        var (client, server) = pair;
        var start = d.Clock.GetUtcNow();
        var arrivals = new List<long>();
        var received = new List<byte>();
        void ReadWhatArrived()
        {
            while (server.Input.TryRead(out var r))
            {
                foreach (var x in r.Buffer.ToArray())
                {
                    received.Add(x);
                    arrivals.Add((long)(d.Clock.GetUtcNow() - start).TotalMilliseconds);
                }
                server.Input.AdvanceTo(r.Buffer.End);
            }
        }

        for (var i = 0; i < 200; i++)
        {
            await client.Output.WriteAndFlushAsync(new[] { (byte)i });
            await Task.Delay(TimeSpan.FromMilliseconds(1), d.Clock);
            ReadWhatArrived();
        }
        await Task.Delay(TimeSpan.FromSeconds(1), d.Clock);
        ReadWhatArrived();
        Assert.That(received, Is.EqualTo(Enumerable.Range(0, 200).Select(i => (byte)i)), "a lossy link is still reliable and ordered");
        return arrivals;
    });

    [Test]
    public void Loss_DelaysLostFlushesByTheRetransmitTimeout_InOrder_ReplayableFromTheSeed()
    {
        var first = LossyArrivals(7);
        var again = LossyArrivals(7);
        var other = LossyArrivals(8);
        Assert.That(again, Is.EqualTo(first), "the same seed loses the same flushes");
        Assert.That(other, Is.Not.EqualTo(first), "another seed loses others");
        // Byte i was sent at i ms: on time it arrives at i + 10 ms (read at the next whole ms), late at least 50 ms more.
        var late = first.Select((t, i) => t - i).Count(delay => delay >= 60);
        Assert.That(late, Is.InRange(5, 80), "about 10 % lost, and everything behind a lost flush waits for it");
        Assert.That(first.Select((t, i) => t - i).Min(), Is.GreaterThanOrEqualTo(10), "nothing arrives before the latency");
    }

    [Test]
    public void EndpointLatencies_AddUpOnALink() => VirtualTimeDriver.Run(async d =>
    {
        await using var pair = await ConnectAsync(d,
            clientEndpoint: new LinkConditions { Latency = TimeSpan.FromMilliseconds(10) },
            serverEndpoint: new LinkConditions { Latency = TimeSpan.FromMilliseconds(20) });
        var (client, server) = pair;

        await client.Output.WriteAndFlushAsync(new byte[] { 9 });
        await Task.Delay(TimeSpan.FromMilliseconds(29), d.Clock);
        Assert.That(server.Input.TryRead(out _), Is.False);
        await Task.Delay(TimeSpan.FromMilliseconds(1), d.Clock);
        Assert.That(ReadNow(server.Input).Data, Is.EqualTo(new byte[] { 9 }));
    });

    [Test]
    public void Latency_LargeTransfer_ArrivesIntactWhenTimeIsDriven() => VirtualTimeDriver.Run(async d =>
    {
        await using var pair = await ConnectAsync(d, serverEndpoint: new LinkConditions { Latency = TimeSpan.FromMilliseconds(5) });
        var (client, server) = pair;

        var data = PipeTestExtensions.RandomBytes(3 * 1024 * 1024, seed: 4);
        var write = PipeTestExtensions.WriteAllAsync(client.Output, data, chunk: 64 * 1024);
        // More than the 1 MiB window: the writer waits for deliveries, which wait for time (the driver moves it).
        var received = await server.Input.ReadToEndAsync();
        await write;

        Assert.That(received.AsSpan().SequenceEqual(data), Is.True);
        // The window bounds the rate: at most 1 MiB in flight per 5 ms, so 3 MiB and the end take four latencies.
        Assert.That(d.Clock.Elapsed, Is.EqualTo(TimeSpan.FromMilliseconds(20)));
    });

    [Test]
    public async Task Partition_BreaksOpenConnectionsAndRefusesDials_HealAllowsDialsAgain()
    {
        await using var pair = await ConnectAsync();
        var (network, a, la, b, lb, client, server) = pair;
        var pendingRead = server.Input.ReadAsync().AsTask();
        await client.Output.WriteAndFlushAsync(new byte[] { 1 });
        var first = await pendingRead.Guarded();
        server.Input.AdvanceTo(first.Buffer.End);
        var pendingClientRead = client.Input.ReadAsync().AsTask();

        network.Partition(la.Address, lb.Address);

        var e1 = Assert.ThrowsAsync<TransportException>(async () => await pendingClientRead.Guarded());
        Assert.That(e1!.Error, Is.EqualTo(TransportError.ConnectionReset));
        Assert.ThrowsAsync<TransportException>(async () => await client.Input.ReadAsync(), "reading again fails the same way");
        Assert.ThrowsAsync<TransportException>(async () => await server.Input.ReadAsync());
        Assert.ThrowsAsync<TransportException>(async () => await client.Output.WriteAsync(new byte[] { 2 }));
        Assert.ThrowsAsync<TransportException>(async () => await server.Output.WriteAsync(new byte[] { 3 }));
        Assert.That(network.ConnectionCount, Is.Zero);

        var e2 = Assert.ThrowsAsync<TransportException>(async () => await a.DialAsync(lb.Address, CancellationToken.None));
        Assert.That(e2!.Error, Is.EqualTo(TransportError.Unreachable));
        Assert.ThrowsAsync<TransportException>(async () => await b.DialAsync(la.Address, CancellationToken.None));
        Assert.That(network.IsPartitioned(lb.Address, la.Address), Is.True);

        network.Heal(lb.Address, la.Address);
        await using var again = await a.DialAsync(lb.Address, CancellationToken.None);
        await using var againServer = await lb.AcceptAsync(CancellationToken.None).Guarded();
        await again.Output.WriteAndFlushAsync(new byte[] { 4 });
        Assert.That(await againServer.Input.ReadExactlyAsync(1).Guarded(), Is.EqualTo(new byte[] { 4 }));
    }

    [Test]
    public void Partition_WithLatency_LosesBytesInFlight() => VirtualTimeDriver.Run(async d =>
    {
        await using var pair = await ConnectAsync(d, serverEndpoint: new LinkConditions { Latency = TimeSpan.FromMilliseconds(10) });
        var (client, server) = pair;

        await client.Output.WriteAndFlushAsync(new byte[] { 1, 2, 3 });
        pair.Network.Partition(client.Local, server.Local);
        await Task.Delay(TimeSpan.FromMilliseconds(10), d.Clock);

        var e = await AsyncAssert.ThrowsAsync<TransportException>(async () => await server.Input.ReadAsync());
        Assert.That(e!.Error, Is.EqualTo(TransportError.ConnectionReset));
    });

    [Test]
    public async Task Dispose_CompletesOurPendingReadAndTheRemoteInput()
    {
        await using var pair = await ConnectAsync();
        var (client, server) = pair;

        var pending = client.Input.ReadAsync().AsTask();
        await client.Output.WriteAndFlushAsync("flushed"u8.ToArray());
        await client.DisposeAsync();
        await client.DisposeAsync();

        var result = await pending.Guarded();
        Assert.That(result.IsCompleted, Is.True);
        client.Input.AdvanceTo(result.Buffer.End);
        Assert.That((await client.Output.WriteAsync(new byte[] { 1 })).IsCompleted, Is.True, "flushes after disposal report IsCompleted");
        Assert.That(await server.Input.ReadToEndAsync().Guarded(), Is.EqualTo("flushed"u8.ToArray()));
        Assert.That((await server.Output.WriteAsync(new byte[] { 1 })).IsCompleted, Is.True, "the remote learns nobody reads");
    }

    [Test]
    public async Task Dispose_WhileWriterIsPausedByBackpressure_ReleasesTheWriter()
    {
        await using var pair = await ConnectAsync();
        var (client, server) = pair;

        var flush = client.Output.WriteAsync(new byte[2 * 1024 * 1024]).AsTask(); // over the pause threshold
        Assert.That(flush.IsCompleted, Is.False);
        await client.DisposeAsync();
        Assert.That((await flush.Guarded()).IsCompleted, Is.True);
    }

    [Test]
    public async Task ListenerDispose_FailsPendingAcceptAndRefusesLaterDials()
    {
        var network = new SimulatedNetwork(new VirtualClock());
        var transport = network.CreateTransport();
        var listener = await transport.ListenAsync(Any, CancellationToken.None);
        var pending = listener.AcceptAsync(CancellationToken.None).AsTask();
        await listener.DisposeAsync();
        await listener.DisposeAsync();

        Assert.CatchAsync<OperationCanceledException>(async () => await pending.Guarded());
        Assert.CatchAsync<OperationCanceledException>(async () => await listener.AcceptAsync(CancellationToken.None));
        var e = Assert.ThrowsAsync<TransportException>(async () => await transport.DialAsync(listener.Address, CancellationToken.None));
        Assert.That(e!.Error, Is.EqualTo(TransportError.ConnectionRefused));
        await using var reused = await transport.ListenAsync(listener.Address, CancellationToken.None);
        Assert.That(reused.Address, Is.EqualTo(listener.Address), "a closed address can be listened on again");
    }

    [Test]
    public async Task ListenerDispose_ResetsDialsItNeverAccepted()
    {
        var network = new SimulatedNetwork(new VirtualClock());
        var listener = await network.CreateTransport().ListenAsync(Any, CancellationToken.None);
        await using var client = await network.CreateTransport().DialAsync(listener.Address, CancellationToken.None);
        await listener.DisposeAsync();

        var e = Assert.ThrowsAsync<TransportException>(async () => await client.Input.ReadAsync());
        Assert.That(e!.Error, Is.EqualTo(TransportError.ConnectionReset));
    }

    [Test]
    public async Task Backlog_Full_RefusesFurtherDials()
    {
        var network = new SimulatedNetwork(new VirtualClock(), new SimulatedNetworkOptions { ListenBacklog = 2 });
        var transport = network.CreateTransport();
        await using var listener = await network.CreateTransport().ListenAsync(Any, CancellationToken.None);
        await transport.DialAsync(listener.Address, CancellationToken.None);
        await transport.DialAsync(listener.Address, CancellationToken.None);
        var e = Assert.ThrowsAsync<TransportException>(async () => await transport.DialAsync(listener.Address, CancellationToken.None));
        Assert.That(e!.Error, Is.EqualTo(TransportError.ConnectionRefused));
        await listener.AcceptAsync(CancellationToken.None);
        Assert.DoesNotThrowAsync(async () => await transport.DialAsync(listener.Address, CancellationToken.None));
    }

    [Test]
    public async Task TwoNetworks_AreIsolated()
    {
        var one = new SimulatedNetwork(new VirtualClock());
        var two = new SimulatedNetwork(new VirtualClock());
        var address = Multiaddr.Parse("/memory/5");
        await using var l1 = await one.CreateTransport().ListenAsync(address, CancellationToken.None);
        await using var l2 = await two.CreateTransport().ListenAsync(address, CancellationToken.None);

        await using var c1 = await one.CreateTransport().DialAsync(address, CancellationToken.None);
        Assert.That(two.ConnectionCount, Is.Zero);
        await using var s1 = await l1.AcceptAsync(CancellationToken.None).Guarded();
        var otherAccept = l2.AcceptAsync(CancellationToken.None).AsTask();
        Assert.That(otherAccept.IsCompleted, Is.False, "a dial on one network never reaches the other");

        var e = Assert.ThrowsAsync<TransportException>(async () =>
            await new SimulatedNetwork(new VirtualClock()).CreateTransport().DialAsync(address, CancellationToken.None));
        Assert.That(e!.Error, Is.EqualTo(TransportError.ConnectionRefused));
    }

    [Test]
    public async Task ThousandsOfNodes_RingOfConnections_EachCarriesItsBytes()
    {
        const int nodes = 2000;
        var network = new SimulatedNetwork(new VirtualClock());
        var transports = Enumerable.Range(0, nodes).Select(_ => network.CreateTransport()).ToArray();
        var listeners = new IListener[nodes];
        for (var i = 0; i < nodes; i++)
        {
            listeners[i] = await transports[i].ListenAsync(Any, CancellationToken.None);
        }
        var clients = new IRawConnection[nodes];
        var servers = new IRawConnection[nodes];
        for (var i = 0; i < nodes; i++)
        {
            clients[i] = await transports[i].DialAsync(listeners[(i + 1) % nodes].Address, CancellationToken.None);
            servers[(i + 1) % nodes] = await listeners[(i + 1) % nodes].AcceptAsync(CancellationToken.None);
        }
        await Task.WhenAll(Enumerable.Range(0, nodes).Select(i => clients[i].Output.WriteAsync(BitConverter.GetBytes(i)).AsTask()));
        var received = await Task.WhenAll(Enumerable.Range(0, nodes).Select(i => servers[i].Input.ReadExactlyAsync(4))).Guarded();

        for (var i = 0; i < nodes; i++)
        {
            Assert.That(BitConverter.ToInt32(received[i]), Is.EqualTo((i + nodes - 1) % nodes));
            Assert.That(servers[i].Remote, Is.EqualTo(listeners[(i + nodes - 1) % nodes].Address));
        }
        Assert.That(network.ConnectionCount, Is.EqualTo(nodes));
        foreach (var c in clients.Concat(servers))
        {
            await c.DisposeAsync();
        }
        Assert.That(network.ConnectionCount, Is.Zero);
    }

    [Test]
    public async Task ApplicationCompletingOutputWithError_FailsTheRemoteRead()
    {
        await using var pair = await ConnectAsync();
        var (client, server) = pair;

        await client.Output.CompleteAsync(new InvalidDataException("boom"));
        Assert.ThrowsAsync<InvalidDataException>(async () => await server.Input.ReadAsync());
    }

    [Test]
    public void Options_Invalid_AreRejected()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => _ = new SimulatedNetwork(new VirtualClock(), new SimulatedNetworkOptions { ListenBacklog = 0 }));
        Assert.Throws<ArgumentException>(() => new SimulatedNetwork(new VirtualClock())
            .SetLink(Multiaddr.Parse("/ip4/1.2.3.4/tcp/1"), Multiaddr.Parse("/memory/1"), LinkConditions.Perfect));
        Assert.Throws<ArgumentOutOfRangeException>(() => new SimulatedNetwork(new VirtualClock())
            .SetEndpoint(Multiaddr.Parse("/memory/1"), new LinkConditions { Latency = TimeSpan.FromSeconds(-1) }));
    }
}
