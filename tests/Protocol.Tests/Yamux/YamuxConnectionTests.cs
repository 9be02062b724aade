using System.Buffers;
using System.IO.Pipelines;
using Microsoft.Extensions.Logging.Abstractions;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Tests.Muxing;
using Potluck.Protocol.Yamux;

namespace Potluck.Protocol.Tests.Yamux;

/// <summary>One yamux connection against a hand-driven peer that writes and reads raw frames.</summary>
public partial class YamuxConnectionTests
{
    private static readonly TimeSpan HangGuard = TimeSpan.FromSeconds(30);
    private readonly List<IAsyncDisposable> _cleanup = [];

    [TearDown]
    public async Task DisposeConnections()
    {
        foreach (var item in Enumerable.Reverse(_cleanup))
        {
            await item.DisposeAsync().AsTask().WaitAsync(HangGuard);
        }

        _cleanup.Clear();
    }

    [Test]
    public async Task DataHeaderAnnouncing4GiB_ClosesTheConnectionWithAProtocolErrorGoAway()
    {
        var (connection, peer) = Start(initiator: false);

        var header = new byte[YamuxHeader.Size];
        new YamuxHeader(YamuxFrameType.Data, YamuxFlags.Syn, 1, uint.MaxValue).Write(header);
        await peer.SendRawAsync(header);

        var goAway = await peer.ReceiveUntilAsync(YamuxFrameType.GoAway);
        Assert.That(goAway.Length, Is.EqualTo((uint)YamuxGoAwayCode.ProtocolError));
        var ex = Assert.ThrowsAsync<ProtocolViolationException>(async () => await connection.Completion.WaitAsync(HangGuard));
        Assert.That(ex!.Protocol, Is.EqualTo("yamux"));
        Assert.That(await peer.ReadToEndAsync(), Is.True, "the connection closed its output");
    }

    [Test]
    public async Task DataFrameAsLargeAsTheWholeWindow_IsAccepted_ButOneByteMoreIsAViolation()
    {
        var (connection, peer) = Start(initiator: false);
        var payload = new byte[YamuxOptions.InitialStreamWindow];
        new Random(5).NextBytes(payload);

        await peer.SendAsync(new YamuxHeader(YamuxFrameType.Data, YamuxFlags.Syn, 1, (uint)payload.Length), payload);
        var stream = await connection.AcceptStreamAsync(default).AsTask().WaitAsync(HangGuard);
        var read = await stream.Input.ReadAtLeastAsync(payload.Length).AsTask().WaitAsync(HangGuard);
        Assert.That(read.Buffer.ToArray(), Is.EqualTo(payload));

        // Not advanced: the window stays spent, so one more byte breaks the protocol.
        await peer.SendAsync(new YamuxHeader(YamuxFrameType.Data, YamuxFlags.None, 1, 1), [7]);
        Assert.ThrowsAsync<ProtocolViolationException>(async () => await connection.Completion.WaitAsync(HangGuard));
        var goAway = await peer.ReceiveUntilAsync(YamuxFrameType.GoAway);
        Assert.That(goAway.Length, Is.EqualTo((uint)YamuxGoAwayCode.ProtocolError));
    }

    [Test]
    [Category("Adversarial")]
    public async Task DataPastTheConnectionsMemory_ResetsOnlyTheStreamItCameOn_WithATypedError()
    {
        // Room for one unread window: 256 KiB reserved (the connection's limit) and 64 KiB free.
        var (connection, peer) = Start(initiator: false, options: new YamuxOptions { MeasureRttOnStart = false, MaxConnectionMemory = YamuxOptions.InitialStreamWindow });
        var window = new byte[YamuxOptions.InitialStreamWindow];
        new Random(6).NextBytes(window);

        await peer.SendAsync(new YamuxHeader(YamuxFrameType.Data, YamuxFlags.Syn, 1, (uint)window.Length), window);
        await peer.SendAsync(new YamuxHeader(YamuxFrameType.Data, YamuxFlags.Syn, 3, (uint)window.Length), window);
        var first = await connection.AcceptStreamAsync(default).AsTask().WaitAsync(HangGuard);
        var second = await connection.AcceptStreamAsync(default).AsTask().WaitAsync(HangGuard);

        // The second stream's bytes did not fit: RST to the remote, a ResourceLimitException to our reader.
        YamuxHeader rst;
        do
        {
            rst = await peer.ReceiveUntilAsync(YamuxFrameType.WindowUpdate);
        }
        while (!rst.Flags.HasFlag(YamuxFlags.Rst));
        Assert.That(rst.StreamId, Is.EqualTo(3u));
        var e = Assert.ThrowsAsync<ResourceLimitException>(async () => await second.Input.ReadAsync().AsTask().WaitAsync(HangGuard));
        Assert.That(Failures.Classify(e!).Kind, Is.EqualTo(FailureKind.ResourceLimit));

        // The first stream and the connection go on: its bytes are intact, and reading them returns the memory.
        var read = await first.Input.ReadAtLeastAsync(window.Length).AsTask().WaitAsync(HangGuard);
        Assert.That(read.Buffer.ToArray(), Is.EqualTo(window));
        first.Input.AdvanceTo(read.Buffer.End);
        Assert.That(connection.ReservedMemory, Is.Zero);
        await peer.SendAsync(new YamuxHeader(YamuxFrameType.Data, YamuxFlags.Syn, 5, 4), [1, 2, 3, 4]);
        var third = await connection.AcceptStreamAsync(default).AsTask().WaitAsync(HangGuard);
        var small = await third.Input.ReadAtLeastAsync(4).AsTask().WaitAsync(HangGuard);
        Assert.That(small.Buffer.ToArray(), Is.EqualTo(new byte[] { 1, 2, 3, 4 }));
        Assert.That(connection.Completion.IsCompleted, Is.False);
    }

    [Test]
    public async Task ConsumingHalfTheWindow_SendsAWindowUpdateForWhatWasConsumed()
    {
        var (connection, peer) = Start(initiator: false);
        var half = (int)YamuxOptions.InitialStreamWindow / 2;
        await peer.SendAsync(new YamuxHeader(YamuxFrameType.Data, YamuxFlags.Syn, 1, (uint)half), new byte[half]);
        var stream = await connection.AcceptStreamAsync(default).AsTask().WaitAsync(HangGuard);

        var ack = await peer.ReceiveUntilAsync(YamuxFrameType.WindowUpdate);
        Assert.That(ack, Is.EqualTo(new YamuxHeader(YamuxFrameType.WindowUpdate, YamuxFlags.Ack, 1, 0)));

        var read = await stream.Input.ReadAtLeastAsync(half).AsTask().WaitAsync(HangGuard);
        stream.Input.AdvanceTo(read.Buffer.End);
        var update = await peer.ReceiveUntilAsync(YamuxFrameType.WindowUpdate);
        Assert.That(update, Is.EqualTo(new YamuxHeader(YamuxFrameType.WindowUpdate, YamuxFlags.None, 1, (uint)half)));
    }

    [Test]
    public async Task Ping_FromTheRemote_IsAnsweredWithAckAndTheSameOpaqueValue()
    {
        var (_, peer) = Start(initiator: false);
        await peer.SendAsync(new YamuxHeader(YamuxFrameType.Ping, YamuxFlags.Syn, 0, 0xDEADBEEF));
        var pong = await peer.ReceiveUntilAsync(YamuxFrameType.Ping);
        Assert.That(pong, Is.EqualTo(new YamuxHeader(YamuxFrameType.Ping, YamuxFlags.Ack, 0, 0xDEADBEEF)));
    }

    [Test]
    public async Task PingAsync_RoundTripsBetweenTwoConnections_AndMeasuresOnTheInjectedClock()
    {
        var (a, b) = MemoryPipePairFactory.CreatePair();
        var muxer = CreateMuxer(new YamuxOptions { MeasureRttOnStart = false });
        var client = Track(muxer.Create(a, initiator: true));
        Track(muxer.Create(b, initiator: false));

        var rtt = await client.PingAsync(default).AsTask().WaitAsync(HangGuard);

        Assert.That(rtt, Is.EqualTo(TimeSpan.Zero), "the virtual clock did not move");
        Assert.That(client.RoundTripTime, Is.EqualTo(TimeSpan.Zero));
    }

    [Test]
    public void PingAsync_AnswerArrivingLater_MeasuresTheElapsedVirtualTime() => VirtualTimeDriver.Run(async d =>
    {
        var (connection, peer) = Start(initiator: true, d.CreateRuntime(1));
        var ping = connection.PingAsync(default).AsTask();
        var sent = await peer.ReceiveUntilAsync(YamuxFrameType.Ping);
        Assert.That(sent.Flags, Is.EqualTo(YamuxFlags.Syn));

        await Task.Delay(TimeSpan.FromMilliseconds(40), d.Clock);
        await peer.SendAsync(sent with { Flags = YamuxFlags.Ack });

        Assert.That(await ping, Is.EqualTo(TimeSpan.FromMilliseconds(40)));
        await DisposeConnections();
    });

    [TestCase(new byte[] { 1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0 }, TestName = "Wire_UnknownVersion_IsAViolation")]
    [TestCase(new byte[] { 0, 9, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0 }, TestName = "Wire_UnknownType_IsAViolation")]
    [TestCase(new byte[] { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 }, TestName = "Wire_DataOnStreamZero_IsAViolation")]
    [TestCase(new byte[] { 0, 1, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0 }, TestName = "Wire_SynWithOurOwnParity_IsAViolation")]
    public async Task BadHeader_ClosesTheConnectionWithAProtocolError(byte[] header)
    {
        var (connection, peer) = Start(initiator: false);
        await peer.SendRawAsync(header);

        Assert.ThrowsAsync<ProtocolViolationException>(async () => await connection.Completion.WaitAsync(HangGuard));
        var goAway = await peer.ReceiveUntilAsync(YamuxFrameType.GoAway);
        Assert.That(goAway.Length, Is.EqualTo((uint)YamuxGoAwayCode.ProtocolError));
    }

    [Test]
    public async Task DuplicateSyn_IsAViolation()
    {
        var (connection, peer) = Start(initiator: false);
        await peer.SendAsync(new YamuxHeader(YamuxFrameType.WindowUpdate, YamuxFlags.Syn, 1, 0));
        await peer.SendAsync(new YamuxHeader(YamuxFrameType.WindowUpdate, YamuxFlags.Syn, 1, 0));
        Assert.ThrowsAsync<ProtocolViolationException>(async () => await connection.Completion.WaitAsync(HangGuard));
    }

    [Test]
    public async Task StreamIds_InitiatorOpensOdd_ResponderOpensEven()
    {
        var (a, b) = MemoryPipePairFactory.CreatePair();
        var muxer = CreateMuxer(new YamuxOptions());
        var client = Track(muxer.Create(a, initiator: true));
        var server = Track(muxer.Create(b, initiator: false));

        var ids = new List<uint>();
        for (var i = 0; i < 3; i++)
        {
            ids.Add((await client.OpenStreamAsync(default)).Id);
            ids.Add((await server.OpenStreamAsync(default)).Id);
        }

        Assert.That(ids, Is.EqualTo(new uint[] { 1, 2, 3, 4, 5, 6 }));
    }

    [Test]
    public async Task OpenStream_SendsSynFirst_ThenDataThenFin()
    {
        var (connection, peer) = Start(initiator: true);
        var stream = await connection.OpenStreamAsync(default);
        await stream.Output.WriteAsync("abc"u8.ToArray());
        await stream.Output.CompleteAsync();

        var syn = await peer.ReceiveUntilAsync(YamuxFrameType.WindowUpdate);
        Assert.That(syn, Is.EqualTo(new YamuxHeader(YamuxFrameType.WindowUpdate, YamuxFlags.Syn, 1, 0)));
        var (data, payload) = await peer.ReceiveAsync();
        var bytes = payload.ToList();
        while (!data.Flags.HasFlag(YamuxFlags.Fin))
        {
            (data, payload) = await peer.ReceiveAsync();
            bytes.AddRange(payload);
        }

        Assert.That(bytes, Is.EqualTo("abc"u8.ToArray()));
        Assert.That(data.StreamId, Is.EqualTo(1u));
        // js-yamux applies a data frame's FIN before its payload and then refuses the payload, so FIN
        // always travels alone in a window update, as go-yamux and js-yamux send it.
        Assert.That(data, Is.EqualTo(new YamuxHeader(YamuxFrameType.WindowUpdate, YamuxFlags.Fin, 1, 0)));
    }

    [Test]
    public async Task Fin_NeverRidesOnADataFrame_EvenWhenWrittenTogetherWithTheData()
    {
        var (connection, peer) = Start(initiator: true);
        var stream = await connection.OpenStreamAsync(default);
        var payload = new byte[1000];
        stream.Output.Write(payload);
        await stream.Output.CompleteAsync();

        var frames = new List<YamuxHeader>();
        YamuxHeader last;
        do
        {
            (last, _) = await peer.ReceiveAsync();
            frames.Add(last);
        }
        while (!last.Flags.HasFlag(YamuxFlags.Fin));

        Assert.That(frames.Where(f => f.Type == YamuxFrameType.Data).Sum(f => f.Length), Is.EqualTo(1000));
        Assert.That(frames.Where(f => f.Type == YamuxFrameType.Data).Select(f => f.Flags & YamuxFlags.Fin), Is.All.EqualTo(YamuxFlags.None));
        Assert.That(last.Type, Is.EqualTo(YamuxFrameType.WindowUpdate));
    }

    [Test]
    public async Task AcceptBacklogFull_FurtherInboundStreamsAreReset()
    {
        var (connection, peer) = Start(initiator: false, options: new YamuxOptions { AcceptBacklog = 2, MeasureRttOnStart = false });
        for (uint id = 1; id <= 5; id += 2)
        {
            await peer.SendAsync(new YamuxHeader(YamuxFrameType.WindowUpdate, YamuxFlags.Syn, id, 0));
        }

        // Only the refusal goes out: accepted streams are acknowledged when the application takes them.
        var first = await peer.ReceiveAsync();
        Assert.That(first.Header, Is.EqualTo(new YamuxHeader(YamuxFrameType.WindowUpdate, YamuxFlags.Rst, 5, 0)));
        Assert.That(connection.StreamCount, Is.EqualTo(2));

        await connection.AcceptStreamAsync(default).AsTask().WaitAsync(HangGuard);
        Assert.That((await peer.ReceiveAsync()).Header, Is.EqualTo(new YamuxHeader(YamuxFrameType.WindowUpdate, YamuxFlags.Ack, 1, 0)));
    }

    [Test]
    [Category("Adversarial")]
    public async Task AcceptBacklog_RefilledRoundAfterRound_QueuesAtMostTheBacklogAndLosesNoAcceptedStream()
    {
        // The accept queue is bounded by the backlog: a remote that refills it as fast as we accept gets its excess
        // refused, every stream it was not refused is handed to the application in order, and nothing else is held.
        var (connection, peer) = Start(initiator: false, options: new YamuxOptions { AcceptBacklog = 2, MeasureRttOnStart = false });
        uint id = 1;
        for (var round = 0; round < 40; round++)
        {
            var first = id;
            for (var i = 0; i < 3; i++, id += 2)
            {
                await peer.SendAsync(new YamuxHeader(YamuxFrameType.WindowUpdate, YamuxFlags.Syn, id, 0));
            }

            Assert.That((await peer.ReceiveAsync()).Header, Is.EqualTo(new YamuxHeader(YamuxFrameType.WindowUpdate, YamuxFlags.Rst, first + 4, 0)), $"round {round}");
            for (var i = 0u; i < 2; i++)
            {
                var stream = await connection.AcceptStreamAsync(default).AsTask().WaitAsync(HangGuard);
                Assert.That(stream.Id, Is.EqualTo(first + 2 * i), $"round {round}");
                Assert.That((await peer.ReceiveAsync()).Header, Is.EqualTo(new YamuxHeader(YamuxFrameType.WindowUpdate, YamuxFlags.Ack, first + 2 * i, 0)));
            }
        }

        Assert.That(connection.StreamCount, Is.EqualTo(80), "the accepted streams, and none of the refused");
        Assert.That(connection.Completion.IsCompleted, Is.False);
    }

    [Test]
    public async Task InboundStream_IsAcknowledgedOnlyOnceAccepted()
    {
        var (connection, peer) = Start(initiator: false);
        await peer.SendAsync(new YamuxHeader(YamuxFrameType.WindowUpdate, YamuxFlags.Syn, 1, 0));
        var pong = await PingFromPeerAsync(peer);
        Assert.That(pong.Flags, Is.EqualTo(YamuxFlags.Ack), "the first frame back is the pong, not an ACK");

        var stream = await connection.AcceptStreamAsync(default).AsTask().WaitAsync(HangGuard);
        var ack = (await peer.ReceiveAsync()).Header;
        Assert.That(ack, Is.EqualTo(new YamuxHeader(YamuxFrameType.WindowUpdate, YamuxFlags.Ack, 1, 0)));
        Assert.That(stream.Id, Is.EqualTo(1u));
    }

    [Test]
    public async Task AckBacklogFull_OpenStreamWaitsUntilTheRemoteAcknowledgesOne()
    {
        var (connection, peer) = Start(initiator: true, options: new YamuxOptions { MaxAckBacklog = 2, MeasureRttOnStart = false });
        await connection.OpenStreamAsync(default);
        await connection.OpenStreamAsync(default);

        var third = connection.OpenStreamAsync(default).AsTask();
        await PingFromPeerAsync(peer);
        Assert.That(third.IsCompleted, Is.False, "two streams await their ACK");

        await peer.SendAsync(new YamuxHeader(YamuxFrameType.WindowUpdate, YamuxFlags.Ack, 1, 0));
        var opened = await third.WaitAsync(HangGuard);
        Assert.That(opened.Id, Is.EqualTo(5u));
    }

    [Test]
    public async Task RemoteReset_FailsReadsWithStreamResetException_AndLaterFramesForItAreIgnored()
    {
        var (connection, peer) = Start(initiator: false);
        await peer.SendAsync(new YamuxHeader(YamuxFrameType.Data, YamuxFlags.Syn, 1, 2), [1, 2]);
        var stream = await connection.AcceptStreamAsync(default).AsTask().WaitAsync(HangGuard);
        await peer.SendAsync(new YamuxHeader(YamuxFrameType.WindowUpdate, YamuxFlags.Rst, 1, 0));
        await peer.SendAsync(new YamuxHeader(YamuxFrameType.Data, YamuxFlags.None, 1, 3), [1, 2, 3]);

        Assert.ThrowsAsync<StreamResetException>(async () =>
        {
            while (true)
            {
                var result = await stream.Input.ReadAsync().AsTask().WaitAsync(HangGuard);
                stream.Input.AdvanceTo(result.Buffer.End);
            }
        });
        var pong = await PingFromPeerAsync(peer);
        Assert.That(pong.Flags, Is.EqualTo(YamuxFlags.Ack), "the connection survived the late frame");
        Assert.That(connection.StreamCount, Is.Zero);
    }

    [Test]
    public async Task GoAwayFromTheRemote_MakesOpenStreamThrow()
    {
        var (connection, peer) = Start(initiator: true);
        await peer.SendAsync(new YamuxHeader(YamuxFrameType.GoAway, YamuxFlags.None, 0, (uint)YamuxGoAwayCode.Normal));
        await PingFromPeerAsync(peer);

        Assert.ThrowsAsync<PeerGoneException>(async () => await connection.OpenStreamAsync(default));
    }

    [Test]
    public async Task GoAwayAsync_SendsNormalGoAway_AndRefusesLaterInboundStreams()
    {
        var (connection, peer) = Start(initiator: false);
        await connection.GoAwayAsync(default);
        var goAway = await peer.ReceiveUntilAsync(YamuxFrameType.GoAway);
        Assert.That(goAway.Length, Is.EqualTo((uint)YamuxGoAwayCode.Normal));

        await peer.SendAsync(new YamuxHeader(YamuxFrameType.WindowUpdate, YamuxFlags.Syn, 1, 0));
        var reply = await peer.ReceiveUntilAsync(YamuxFrameType.WindowUpdate);
        Assert.That(reply, Is.EqualTo(new YamuxHeader(YamuxFrameType.WindowUpdate, YamuxFlags.Rst, 1, 0)));
    }

    [Test]
    public void IdleConnection_HoldsNoWriter_AndStartsOneEachTimeThereIsSomethingToWrite() => VirtualTimeDriver.Run(async d =>
    {
        var (connection, peer) = Start(initiator: true, d.CreateRuntime(1));
        await d.IdleAsync();
        Assert.That(connection.IsWriterRunning, Is.False, "a fresh connection with nothing to write");

        var stream = await connection.OpenStreamAsync(default);
        for (byte round = 1; round <= 3; round++)
        {
            // Each round finds the connection idle, so a new writer frames the bytes and ends again.
            await stream.Output.WriteAsync(new[] { round, (byte)(round + 1) });
            var (header, payload) = await ReceiveDataAsync(peer);
            Assert.That(header.StreamId, Is.EqualTo(stream.Id));
            Assert.That(payload, Is.EqualTo(new[] { round, (byte)(round + 1) }));
            await d.IdleAsync();
            Assert.That(connection.IsWriterRunning, Is.False, $"round {round}: written out, no writer left");
        }

        // Control frames alone (a ping reply) start one too.
        var pong = await PingFromPeerAsync(peer);
        Assert.That(pong.Flags, Is.EqualTo(YamuxFlags.Ack));
        await d.IdleAsync();
        Assert.That(connection.IsWriterRunning, Is.False);

        // Closing runs a last writer (GoAway), after which none is ever started.
        await connection.DisposeAsync();
        Assert.That(connection.Completion.IsCompletedSuccessfully, Is.True);
        Assert.That((await peer.ReceiveUntilAsync(YamuxFrameType.GoAway)).Length, Is.EqualTo((uint)YamuxGoAwayCode.Normal));
        Assert.ThrowsAsync<PeerGoneException>(async () => await stream.Output.WriteAsync(new byte[] { 9 }));
        Assert.That(connection.IsWriterRunning, Is.False);
        await DisposeConnections();
    });

    [Test]
    public void AnIdleConnection_AfterTraffic_HoldsNoQueueArray_NoCancellationSource_AndNoDelegate() => VirtualTimeDriver.Run(async d =>
    {
        var (connection, peer) = Start(initiator: true, d.CreateRuntime(1));
        var stream = await connection.OpenStreamAsync(default);
        for (byte round = 1; round <= 3; round++)
        {
            // Data, window updates and a ping reply go through the session's dirty-stream and control queues.
            await stream.Output.WriteAsync(new[] { round, round, round });
            await ReceiveDataAsync(peer);
            Assert.That((await PingFromPeerAsync(peer)).Flags, Is.EqualTo(YamuxFlags.Ack));
            await d.IdleAsync();
            Assert.That(connection.HoldsQueueArrays, Is.False, $"round {round}: drained queues give their arrays back");
        }

        // What a connection holds for its life, by field (its session's included): no cancellation source (a registration
        // table and a free callback node stayed with it) and no delegate (the session's stream factory is the connection).
        var held = HeldFieldTypes(connection).Concat(HeldFieldTypes(SessionOf(connection))).ToList();
        Assert.That(held.Where(t => typeof(CancellationTokenSource).IsAssignableFrom(t)), Is.Empty);
        Assert.That(held.Where(t => typeof(Delegate).IsAssignableFrom(t)), Is.Empty);
        Assert.That(held.Where(t => t.IsGenericType && t.GetGenericTypeDefinition() == typeof(Queue<>)), Is.Empty);

        // The close timeout still cuts the last flush short (Dispose_WhenTheRemoteNeverReads_… pins its timing).
        await connection.DisposeAsync();
        Assert.That(connection.Completion.IsCompleted, Is.True);
        await DisposeConnections();
    });

    private static YamuxSession SessionOf(YamuxConnection connection) =>
        (YamuxSession)typeof(YamuxConnection).GetField("_session", System.Reflection.BindingFlags.Instance | System.Reflection.BindingFlags.NonPublic)!.GetValue(connection)!;

    [Test]
    public void AfterItsStartUpRttProbe_AConnectionKeepsNoFinishedTask() => VirtualTimeDriver.Run(async d =>
    {
        var (connection, peer) = Start(initiator: true, d.CreateRuntime(1), new YamuxOptions { MeasureRttOnStart = true });
        var probe = await peer.ReceiveUntilAsync(YamuxFrameType.Ping);
        Assert.That(HeldFields(connection).OfType<Task>().Count(t => !t.IsCompleted), Is.EqualTo(2), "the read loop and the probe waiting for its pong");

        await peer.SendAsync(new YamuxHeader(YamuxFrameType.Ping, YamuxFlags.Ack, 0, probe.Length));
        await d.IdleAsync();
        Assert.That(connection.RoundTripTime, Is.Not.Null, "the probe ended with its pong");
        // What stays for the connection's life: the read loop's task (running) and the completion's; the probe's finished
        // task is not kept (72 B per connection end).
        var tasks = HeldFields(connection).OfType<Task>().ToList();
        Assert.That(tasks.Count(t => !t.IsCompleted), Is.EqualTo(1), "the read loop");
        Assert.That(tasks.Count(t => t.IsCompleted), Is.Zero, "no finished task is held");

        await connection.DisposeAsync();
        Assert.That(connection.Completion.IsCompletedSuccessfully, Is.True);
        await DisposeConnections();
    });

    /// <summary>The runtime types of the objects an instance's fields (and its struct fields', inline) refer to now.</summary>
    private static IEnumerable<Type> HeldFieldTypes(object instance) => HeldFields(instance).Select(v => v.GetType());

    /// <summary>The objects an instance's fields (and its struct fields', inline) refer to now.</summary>
    internal static IEnumerable<object> HeldFields(object instance)
    {
        const System.Reflection.BindingFlags Flags = System.Reflection.BindingFlags.Instance | System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.NonPublic;
        for (var type = instance.GetType(); type is not null && type != typeof(object); type = type.BaseType)
        {
            foreach (var field in type.GetFields(Flags | System.Reflection.BindingFlags.DeclaredOnly))
            {
                var value = field.GetValue(instance);
                if (value is null || field.FieldType.IsPrimitive || field.FieldType.IsEnum)
                {
                    continue;
                }
                if (field.FieldType.IsValueType)
                {
                    foreach (var inner in HeldFields(value))
                    {
                        yield return inner;
                    }
                    continue;
                }
                yield return value;
            }
        }
    }

    private static async Task<(YamuxHeader Header, byte[] Payload)> ReceiveDataAsync(RawPeer peer)
    {
        while (true)
        {
            var frame = await peer.ReceiveAsync();
            if (frame.Header.Type == YamuxFrameType.Data)
            {
                return frame;
            }
        }
    }

    [Test]
    public void Dispose_WhenTheRemoteNeverReads_FinishesExactlyAtTheCloseTimeout() => VirtualTimeDriver.Run(async d =>
    {
        var (connection, peer) = Start(initiator: true, d.CreateRuntime(1));
        var stream = await connection.OpenStreamAsync(default);

        // Fill the transport: the peer never reads, so the connection's flush blocks.
        await stream.Output.WriteAsync(new byte[200 * 1024]);
        var started = d.Clock.Elapsed;
        await connection.DisposeAsync();

        Assert.That(d.Clock.Elapsed - started, Is.EqualTo(new YamuxOptions().CloseTimeout));
        Assert.That(connection.Completion.IsCompleted, Is.True);
        GC.KeepAlive(peer);
        await DisposeConnections();
    });

    [Test]
    public async Task AnOpenConnection_HoldsNoTimer_ItsCloseArmsOne_ForTheCloseTimeout_AndDisposesIt()
    {
        // On main the close timeout's CancellationTokenSource made its timer with the connection: one per connection end
        // for its whole life (a VirtualTimer of 72 B in a simulated mesh).
        var time = new CountingTime(new VirtualClock());
        var (connection, peer) = Start(initiator: true, NodeRuntime.WithTime(time));
        var stream = await connection.OpenStreamAsync(default);
        await stream.Output.WriteAsync(new byte[] { 1, 2, 3 });
        var data = await ReceiveDataAsync(peer);
        Assert.That(data.Payload, Is.EqualTo(new byte[] { 1, 2, 3 }));
        Assert.That(time.Created, Is.Zero, "an open connection that has carried a stream holds no timer");

        await connection.DisposeAsync();

        Assert.That(time.Created, Is.EqualTo(1), "closing armed the close timeout");
        Assert.That(time.Dues, Is.EqualTo(new[] { new YamuxOptions().CloseTimeout }));
        Assert.That(time.Disposed, Is.EqualTo(1), "and the close disposed it");
    }

    /// <summary>A clock that counts the timers made through it (their due times) and those disposed.</summary>
    private sealed class CountingTime(TimeProvider inner) : TimeProvider
    {
        private int _created;
        private int _disposed;
        private readonly List<TimeSpan> _dues = [];

        public int Created => Volatile.Read(ref _created);

        public int Disposed => Volatile.Read(ref _disposed);

        public TimeSpan[] Dues
        {
            get
            {
                lock (_dues)
                {
                    return [.. _dues];
                }
            }
        }

        public override DateTimeOffset GetUtcNow() => inner.GetUtcNow();

        public override long GetTimestamp() => inner.GetTimestamp();

        public override long TimestampFrequency => inner.TimestampFrequency;

        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
        {
            Interlocked.Increment(ref _created);
            lock (_dues)
            {
                _dues.Add(dueTime);
            }
            return new Counted(inner.CreateTimer(callback, state, dueTime, period), this);
        }

        private sealed class Counted(ITimer timer, CountingTime owner) : ITimer
        {
            public bool Change(TimeSpan dueTime, TimeSpan period) => timer.Change(dueTime, period);

            public void Dispose()
            {
                Interlocked.Increment(ref owner._disposed);
                timer.Dispose();
            }

            public ValueTask DisposeAsync()
            {
                Dispose();
                return ValueTask.CompletedTask;
            }
        }
    }

    [Test]
    public async Task PingFlood_WithoutReading_StaysBoundedAndTheConnectionSurvives()
    {
        var (connection, peer) = Start(initiator: false, options: new YamuxOptions { MaxPendingControlFrames = 16, MeasureRttOnStart = false });
        for (uint i = 0; i < 20_000; i++)
        {
            await peer.SendAsync(new YamuxHeader(YamuxFrameType.Ping, YamuxFlags.Syn, 0, i));
        }

        // Now read: answer the connection's own ping, counting the replies to ours on the way.
        var pongs = 0;
        var reader = Task.Run(async () =>
        {
            while (true)
            {
                var (header, _) = await peer.ReceiveAsync();
                if (header.Type != YamuxFrameType.Ping)
                {
                    continue;
                }

                if (header.Flags == YamuxFlags.Ack)
                {
                    pongs++;
                }
                else
                {
                    await peer.SendAsync(header with { Flags = YamuxFlags.Ack });
                    return;
                }
            }
        });

        await connection.PingAsync(default).AsTask().WaitAsync(HangGuard);
        await reader.WaitAsync(HangGuard);
        Assert.That(pongs, Is.LessThan(20_000), "replies beyond the queue cap were dropped");
        Assert.That(connection.Completion.IsCompleted, Is.False);
    }

    /// <summary>A muxer on the thread pool with a clock nothing moves, unless <paramref name="runtime"/> (a driver's) is given.</summary>
    private static YamuxMuxer CreateMuxer(YamuxOptions options, NodeRuntime? runtime = null) =>
        new(options, runtime ?? NodeRuntime.WithTime(new VirtualClock()), NullLoggerFactory.Instance);

    private (YamuxConnection Connection, RawPeer Peer) Start(bool initiator, NodeRuntime? runtime = null, YamuxOptions? options = null)
    {
        var (ours, theirs) = MemoryPipePairFactory.CreatePair(runtime?.PipeScheduler);
        var connection = Track(CreateMuxer(options ?? new YamuxOptions { MeasureRttOnStart = false }, runtime).Create(ours, initiator));
        return (connection, new RawPeer(theirs));
    }

    private static async Task<YamuxHeader> PingFromPeerAsync(RawPeer peer)
    {
        await peer.SendAsync(new YamuxHeader(YamuxFrameType.Ping, YamuxFlags.Syn, 0, 77));
        while (true)
        {
            var header = await peer.ReceiveUntilAsync(YamuxFrameType.Ping);
            if (header.Length == 77)
            {
                return header;
            }
        }
    }

    private T Track<T>(T item)
        where T : IAsyncDisposable
    {
        _cleanup.Add(item);
        return item;
    }

    /// <summary>The far end of the pipe, speaking raw yamux frames.</summary>
    private sealed class RawPeer(IDuplexPipe pipe)
    {
        public async Task SendAsync(YamuxHeader header, byte[]? payload = null)
        {
            YamuxFrame.Write(pipe.Output, header, payload ?? []);
            await pipe.Output.FlushAsync().AsTask().WaitAsync(HangGuard);
        }

        public async Task SendRawAsync(byte[] bytes) =>
            await pipe.Output.WriteAsync(bytes).AsTask().WaitAsync(HangGuard);

        public async Task<(YamuxHeader Header, byte[] Payload)> ReceiveAsync()
        {
            while (true)
            {
                var result = await pipe.Input.ReadAsync().AsTask().WaitAsync(HangGuard);
                var reader = new SequenceReader<byte>(result.Buffer);
                var status = YamuxFrame.TryRead(ref reader, uint.MaxValue, out var header, out var payload, out var error);
                if (status == DecodeStatus.Done)
                {
                    var bytes = payload.ToArray();
                    pipe.Input.AdvanceTo(reader.Position);
                    return (header, bytes);
                }

                Assert.That(status, Is.EqualTo(DecodeStatus.NeedMoreData), error);
                if (result.IsCompleted)
                {
                    throw new EndOfStreamException("the connection closed its output");
                }

                pipe.Input.AdvanceTo(result.Buffer.Start, result.Buffer.End);
            }
        }

        public async Task<YamuxHeader> ReceiveUntilAsync(YamuxFrameType type)
        {
            while (true)
            {
                var (header, _) = await ReceiveAsync();
                if (header.Type == type)
                {
                    return header;
                }
            }
        }

        /// <summary>True once the connection has completed its output (drains whatever is left).</summary>
        public async Task<bool> ReadToEndAsync()
        {
            while (true)
            {
                var result = await pipe.Input.ReadAsync().AsTask().WaitAsync(HangGuard);
                pipe.Input.AdvanceTo(result.Buffer.End);
                if (result.IsCompleted)
                {
                    return true;
                }
            }
        }
    }
}
