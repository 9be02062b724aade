using System.Buffers;
using System.IO.Pipelines;
using System.Text;
using Potluck.Protocol.Multistream;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Tests.Multistream;

public class MultistreamSelectTests
{
    private static readonly MultistreamOptions Options = MultistreamOptions.Default;

    internal static byte[] Msg(string text)
    {
        var w = new ArrayBufferWriter<byte>();
        MultistreamMessage.Write(w, text);
        return w.WrittenSpan.ToArray();
    }

    private static byte[] Concat(params byte[][] parts) => parts.SelectMany(p => p).ToArray();

    [Test]
    public async Task SelectAndHandle_CommonProtocol_BothReturnIt()
    {
        var (dialer, listener) = PipePair.Create();
        var listening = MultistreamSelect.HandleAsync(listener, ["/yamux/1.0.0", "/noise"], Options, default).AsTask();
        var selected = await MultistreamSelect.SelectAsync(dialer, ["/noise"], Options, default);
        Assert.That(selected, Is.EqualTo("/noise"));
        Assert.That(await listening, Is.EqualTo("/noise"));
    }

    [Test]
    public async Task Select_FirstAnsweredNa_FallsBackToNext()
    {
        var (dialer, listener) = PipePair.Create();
        var listening = MultistreamSelect.HandleAsync(listener, p => p == "/noise", Options, default).AsTask();
        var selected = await MultistreamSelect.SelectAsync(dialer, ["/tls/1.0.0", "/noise"], Options, default);
        Assert.That(selected, Is.EqualTo("/noise"));
        Assert.That(await listening, Is.EqualTo("/noise"));
    }

    [Test]
    public async Task Select_NoneSupported_ThrowsProtocolNotSupported_AndListenerSeesEndOfStream()
    {
        var (dialer, listener) = PipePair.Create();
        var listening = MultistreamSelect.HandleAsync(listener, p => p == "/noise", Options, default).AsTask();
        var ex = Assert.ThrowsAsync<ProtocolNotSupportedException>(
            async () => await MultistreamSelect.SelectAsync(dialer, ["/tls/1.0.0", "/plaintext/2.0.0"], Options, default));
        Assert.That(ex!.Offered, Is.EqualTo(new[] { "/tls/1.0.0", "/plaintext/2.0.0" }));

        await dialer.Output.CompleteAsync();
        Assert.ThrowsAsync<PeerGoneException>(async () => await listening);
    }

    [Test]
    public async Task TrySelect_NoneSupported_ReturnsUnsupported_AndTryHandleTakesTheDialersEndAsAResult()
    {
        var (dialer, listener) = PipePair.Create();
        var listening = MultistreamSelect.TryHandleAsync(listener, p => p == "/noise", Options, default).AsTask();
        var negotiation = await MultistreamSelect.TrySelectAsync(dialer, ["/tls/1.0.0", "/plaintext/2.0.0"], Options, default);
        Assert.That(negotiation.IsAgreed, Is.False);
        Assert.That(negotiation.Failure?.Kind, Is.EqualTo(FailureKind.Unsupported));
        Assert.That(negotiation.Offered, Is.EqualTo(new[] { "/tls/1.0.0", "/plaintext/2.0.0" }));
        Assert.That(negotiation.ToException(), Is.InstanceOf<ProtocolNotSupportedException>()
            .With.Property(nameof(ProtocolNotSupportedException.Offered)).EqualTo(new[] { "/tls/1.0.0", "/plaintext/2.0.0" }));

        await dialer.Output.CompleteAsync();
        var ended = await listening;
        Assert.That(ended.Protocol, Is.Null);
        Assert.That(ended.Failure?.Kind, Is.EqualTo(FailureKind.PeerGone));
        Assert.That(ended.ToException(), Is.InstanceOf<PeerGoneException>());
    }

    [Test]
    public async Task TrySelect_CommonProtocol_IsAgreedWithNoFailure()
    {
        var (dialer, listener) = PipePair.Create();
        var listening = MultistreamSelect.TryHandleAsync(listener, p => p == "/noise", Options, default).AsTask();
        var negotiation = await MultistreamSelect.TrySelectAsync(dialer, ["/tls/1.0.0", "/noise"], Options, default);
        Assert.That(negotiation.Protocol, Is.EqualTo("/noise"));
        Assert.That(negotiation.Failure, Is.Null);
        Assert.That((await listening).Protocol, Is.EqualTo("/noise"));
    }

    [Test]
    public async Task Select_SendsHeaderAndFirstProposalInOneFlush()
    {
        var (dialer, listener) = PipePair.Create();
        var selecting = MultistreamSelect.SelectAsync(dialer, ["/noise", "/tls/1.0.0"], Options, default).AsTask();

        var wire = PipePair.ReadBuffered(listener.Input);
        Assert.That(wire, Is.EqualTo(Concat(
            [0x13], "/multistream/1.0.0\n"u8.ToArray(),
            [0x07], "/noise\n"u8.ToArray())));
        Assert.That(selecting.IsCompleted, Is.False, "the dialer waits for the listener's answer");

        await PipePair.WriteAsync(listener.Output, Msg("/multistream/1.0.0"), Msg("/noise"));
        Assert.That(await selecting, Is.EqualTo("/noise"));
    }

    [Test]
    public async Task Handle_BytesAfterProposalInSameWrite_AreLeftForTheNextLayer()
    {
        // js-libp2p and lazy dialers send header, proposal and their first data in one write.
        var (dialer, listener) = PipePair.Create();
        await dialer.Output.WriteAsync(Concat(Msg("/multistream/1.0.0"), Msg("/noise"), "first noise message"u8.ToArray()));

        var selected = await MultistreamSelect.HandleAsync(listener, ["/noise"], Options, default);

        Assert.That(selected, Is.EqualTo("/noise"));
        Assert.That(await PipePair.ReadExactlyAsync(listener.Input, 19), Is.EqualTo("first noise message"u8.ToArray()));
        Assert.That(PipePair.ReadBuffered(dialer.Input), Is.EqualTo(Concat(Msg("/multistream/1.0.0"), Msg("/noise"))),
            "the listener's header and its echo leave together");
    }

    [Test]
    public async Task Select_BytesAfterEcho_AreLeftForTheNextLayer()
    {
        var (dialer, listener) = PipePair.Create();
        var selecting = MultistreamSelect.SelectAsync(dialer, ["/yamux/1.0.0"], Options, default).AsTask();
        await listener.Output.WriteAsync(Concat(Msg("/multistream/1.0.0"), Msg("/yamux/1.0.0"), [0, 1, 0, 1]));

        Assert.That(await selecting, Is.EqualTo("/yamux/1.0.0"));
        Assert.That(await PipePair.ReadExactlyAsync(dialer.Input, 4), Is.EqualTo(new byte[] { 0, 1, 0, 1 }));
    }

    [Test]
    public async Task Handle_MessagesSplitIntoSingleBytes_StillNegotiates()
    {
        var (dialer, listener) = PipePair.Create();
        var listening = MultistreamSelect.HandleAsync(listener, ["/noise"], Options, default).AsTask();
        foreach (var b in Concat(Msg("/multistream/1.0.0"), Msg("/noise")))
        {
            Assert.That(listening.IsCompleted, Is.False);
            await dialer.Output.WriteAsync(new[] { b });
        }
        Assert.That(await listening, Is.EqualTo("/noise"));
    }

    [Test]
    public async Task Handle_Ls_AnswersWithTheSupportedList()
    {
        var (dialer, listener) = PipePair.Create();
        var listening = MultistreamSelect.HandleAsync(listener, ["/noise", "/tls/1.0.0"], Options, default).AsTask();
        await PipePair.WriteAsync(dialer.Output, Msg("/multistream/1.0.0"), Msg("ls"));

        var wire = new ReadOnlySequence<byte>(PipePair.ReadBuffered(dialer.Input));
        var reader = new SequenceReader<byte>(wire);
        Assert.That(MultistreamMessage.TryRead(ref reader, 1024, out var header, out _), Is.EqualTo(DecodeStatus.Done));
        Assert.That(header, Is.EqualTo("/multistream/1.0.0"));
        Assert.That(MultistreamMessage.TryRead(ref reader, 1024, out var list, out _), Is.EqualTo(DecodeStatus.Done));
        Assert.That(reader.End, Is.True);
        Assert.That(Encoding.UTF8.GetBytes(list! + "\n"), Is.EqualTo(Concat(Msg("/noise"), Msg("/tls/1.0.0"), "\n"u8.ToArray())));

        await dialer.Output.WriteAsync(Msg("/tls/1.0.0"));
        Assert.That(await listening, Is.EqualTo("/tls/1.0.0"));
    }

    [Test]
    public async Task Handle_WrongHeader_IsAViolation()
    {
        var (dialer, listener) = PipePair.Create();
        var listening = MultistreamSelect.HandleAsync(listener, ["/noise"], Options, default).AsTask();
        await dialer.Output.WriteAsync(Msg("/multistream/2.0.0"));
        var ex = Assert.ThrowsAsync<ProtocolViolationException>(async () => await listening);
        Assert.That(ex!.Reason, Does.Contain("/multistream/2.0.0"));
    }

    [Test]
    public async Task Select_WrongHeaderFromListener_IsAViolation()
    {
        var (dialer, listener) = PipePair.Create();
        var selecting = MultistreamSelect.SelectAsync(dialer, ["/noise"], Options, default).AsTask();
        await listener.Output.WriteAsync(Msg("/noise"));
        Assert.ThrowsAsync<ProtocolViolationException>(async () => await selecting);
    }

    [Test]
    public async Task Select_UnexpectedAnswer_IsAViolation()
    {
        var (dialer, listener) = PipePair.Create();
        var selecting = MultistreamSelect.SelectAsync(dialer, ["/noise"], Options, default).AsTask();
        await listener.Output.WriteAsync(Concat(Msg("/multistream/1.0.0"), Msg("/tls/1.0.0")));
        var ex = Assert.ThrowsAsync<ProtocolViolationException>(async () => await selecting);
        Assert.That(ex!.Reason, Does.Contain("unexpected"));
    }

    [Test]
    public async Task Handle_OversizedLengthPrefix_IsAViolationBeforeTheBodyArrives()
    {
        var (dialer, listener) = PipePair.Create();
        var listening = MultistreamSelect.HandleAsync(listener, ["/noise"], Options, default).AsTask();
        await dialer.Output.WriteAsync(new byte[] { 0x81, 0x08 }); // 1025: only the prefix is sent
        var ex = Assert.ThrowsAsync<ProtocolViolationException>(async () => await listening);
        Assert.That(ex!.Reason, Does.Contain("1025").And.Contain("1024"));
    }

    [Test]
    public async Task Handle_HugeVarint_IsAViolation()
    {
        var (dialer, listener) = PipePair.Create();
        var listening = MultistreamSelect.HandleAsync(listener, ["/noise"], Options, default).AsTask();
        await dialer.Output.WriteAsync(Enumerable.Repeat((byte)0xFF, 10).ToArray());
        Assert.ThrowsAsync<ProtocolViolationException>(async () => await listening);
    }

    [Test]
    public async Task Handle_MissingNewline_IsAViolation()
    {
        var (dialer, listener) = PipePair.Create();
        var listening = MultistreamSelect.HandleAsync(listener, ["/noise"], Options, default).AsTask();
        await dialer.Output.WriteAsync(Concat([0x12], "/multistream/1.0.0"u8.ToArray()));
        var ex = Assert.ThrowsAsync<ProtocolViolationException>(async () => await listening);
        Assert.That(ex!.Reason, Does.Contain("newline"));
    }

    [Test]
    public async Task Handle_InvalidUtf8_IsAViolation()
    {
        var (dialer, listener) = PipePair.Create();
        var listening = MultistreamSelect.HandleAsync(listener, ["/noise"], Options, default).AsTask();
        await dialer.Output.WriteAsync(Concat(Msg("/multistream/1.0.0"), [0x03, 0xC3, 0x28, (byte)'\n']));
        var ex = Assert.ThrowsAsync<ProtocolViolationException>(async () => await listening);
        Assert.That(ex!.Reason, Does.Contain("UTF-8"));
    }

    [Test]
    public async Task Handle_StreamEndsInsideMessage_IsAViolation()
    {
        var (dialer, listener) = PipePair.Create();
        var listening = MultistreamSelect.HandleAsync(listener, ["/noise"], Options, default).AsTask();
        await dialer.Output.WriteAsync(Msg("/multistream/1.0.0").AsMemory(0, 10));
        await dialer.Output.CompleteAsync();
        var ex = Assert.ThrowsAsync<ProtocolViolationException>(async () => await listening);
        Assert.That(ex!.Reason, Does.Contain("inside a message"));
    }

    [Test]
    public async Task Handle_TooManyProposals_GivesUpWithAViolation()
    {
        var (dialer, listener) = PipePair.Create();
        var options = new MultistreamOptions { MaxProposals = 3 };
        var listening = MultistreamSelect.HandleAsync(listener, ["/noise"], options, default).AsTask();
        await PipePair.WriteAsync(dialer.Output, Msg("/multistream/1.0.0"), Msg("/a"), Msg("ls"), Msg("/c"));
        var ex = Assert.ThrowsAsync<ProtocolViolationException>(async () => await listening);
        Assert.That(ex!.Reason, Does.Contain("more than 3 proposals"));
    }

    [Test]
    public void Select_ProtocolTooLongForTheLimit_IsRejectedLocally()
    {
        var (dialer, _) = PipePair.Create();
        Assert.ThrowsAsync<ArgumentException>(async () =>
            await MultistreamSelect.SelectAsync(dialer, ["/" + new string('a', 1023)], Options, default));
        Assert.ThrowsAsync<ArgumentException>(async () =>
            await MultistreamSelect.SelectAsync(dialer, ["/a\n/b"], Options, default));
        Assert.ThrowsAsync<ArgumentException>(async () =>
            await MultistreamSelect.SelectAsync(dialer, [], Options, default));
    }

    [Test]
    public async Task Select_Cancelled_ThrowsOperationCanceled()
    {
        var (dialer, _) = PipePair.Create();
        using var cts = new CancellationTokenSource();
        var selecting = MultistreamSelect.SelectAsync(dialer, ["/noise"], Options, cts.Token).AsTask();
        await cts.CancelAsync();
        Assert.That(async () => await selecting, Throws.InstanceOf<OperationCanceledException>());
    }

    [Test]
    public async Task SelectOneLazy_DataFollowsProposal_ListenerGetsItAndDialerSkipsTheEcho()
    {
        var (dialer, listener) = PipePair.Create();
        var lazy = await MultistreamSelect.SelectOneLazyAsync(dialer, "/noise", Options, default);
        await lazy.Output.WriteAsync("ping"u8.ToArray());

        Assert.That(await MultistreamSelect.HandleAsync(listener, ["/noise"], Options, default), Is.EqualTo("/noise"));
        Assert.That(await PipePair.ReadExactlyAsync(listener.Input, 4), Is.EqualTo("ping"u8.ToArray()));

        await listener.Output.WriteAsync("pong"u8.ToArray());
        Assert.That(await PipePair.ReadExactlyAsync(lazy.Input, 4), Is.EqualTo("pong"u8.ToArray()));
        await listener.Output.WriteAsync("more"u8.ToArray());
        Assert.That(await PipePair.ReadExactlyAsync(lazy.Input, 4), Is.EqualTo("more"u8.ToArray()));
    }

    [Test]
    public async Task SelectOneLazyUnflushed_ProposalLeavesWithTheFirstDataInOneWrite()
    {
        var (dialer, listener) = PipePair.Create();
        var lazy = MultistreamSelect.SelectOneLazy(dialer, "/noise", Options);
        Assert.That(PipePair.ReadBuffered(listener.Input), Is.Empty, "nothing leaves before the caller flushes");
        await lazy.Output.WriteAsync("ping"u8.ToArray());
        Assert.That(PipePair.ReadBuffered(listener.Input), Is.EqualTo(Concat(Msg("/multistream/1.0.0"), Msg("/noise"), "ping"u8.ToArray())));
    }

    [Test]
    public async Task HandleDeferringEcho_LazyDialer_EchoLeavesWithTheListenersFirstAnswer()
    {
        var (dialer, listener) = PipePair.Create();
        var lazy = MultistreamSelect.SelectOneLazy(dialer, "/noise", Options);
        await lazy.Output.WriteAsync("ping"u8.ToArray());

        Assert.That(await MultistreamSelect.HandleDeferringEchoAsync(listener, p => p == "/noise", Options, default), Is.EqualTo("/noise"));
        Assert.That(PipePair.ReadBuffered(dialer.Input), Is.Empty, "header and echo wait for the answer");
        Assert.That(await PipePair.ReadExactlyAsync(listener.Input, 4), Is.EqualTo("ping"u8.ToArray()));
        await listener.Output.WriteAsync("pong"u8.ToArray());
        Assert.That(await PipePair.ReadExactlyAsync(lazy.Input, 4), Is.EqualTo("pong"u8.ToArray()));
    }

    [Test]
    public async Task HandleDeferringEcho_DialerWaitingForTheEcho_GetsItAtOnce()
    {
        var (dialer, listener) = PipePair.Create();
        var selecting = MultistreamSelect.SelectAsync(dialer, ["/noise"], Options, default).AsTask();
        Assert.That(await MultistreamSelect.HandleDeferringEchoAsync(listener, p => p == "/noise", Options, default), Is.EqualTo("/noise"));
        Assert.That(await selecting, Is.EqualTo("/noise"), "a non-lazy dialer must not wait on the listener's first answer");
    }

    [Test]
    public async Task HandleDeferringEcho_UnsupportedProtocol_LazyDialerSeesNotSupported()
    {
        var (dialer, listener) = PipePair.Create();
        var lazy = MultistreamSelect.SelectOneLazy(dialer, "/noise", Options);
        await lazy.Output.FlushAsync();
        var handling = MultistreamSelect.HandleDeferringEchoAsync(listener, p => p == "/tls/1.0.0", Options, default).AsTask();
        Assert.ThrowsAsync<ProtocolNotSupportedException>(async () => await lazy.Input.ReadAsync());
        Assert.That(handling.IsCompleted, Is.False, "the listener waits for another proposal");
    }

    [Test]
    public async Task SelectOneLazy_AnswersArriveByteByByte_FirstReadWaitsForTheEcho()
    {
        var (dialer, listener) = PipePair.Create();
        var lazy = await MultistreamSelect.SelectOneLazyAsync(dialer, "/noise", Options, default);
        var reading = PipePair.ReadExactlyAsync(lazy.Input, 3);
        foreach (var b in Concat(Msg("/multistream/1.0.0"), Msg("/noise")))
        {
            Assert.That(reading.IsCompleted, Is.False);
            await listener.Output.WriteAsync(new[] { b });
        }
        Assert.That(reading.IsCompleted, Is.False, "verified, but no data yet");
        await listener.Output.WriteAsync("abc"u8.ToArray());
        Assert.That(await reading, Is.EqualTo("abc"u8.ToArray()));
    }

    [Test]
    public async Task SelectOneLazy_TryRead_IsFalseUntilVerifiedDataArrives()
    {
        var (dialer, listener) = PipePair.Create();
        var lazy = await MultistreamSelect.SelectOneLazyAsync(dialer, "/noise", Options, default);
        foreach (var b in Concat(Msg("/multistream/1.0.0"), Msg("/noise")))
        {
            await listener.Output.WriteAsync(new[] { b });
            Assert.That(lazy.Input.TryRead(out _), Is.False);
        }
        await listener.Output.WriteAsync("abc"u8.ToArray());
        Assert.That(lazy.Input.TryRead(out var result), Is.True);
        Assert.That(result.Buffer.ToArray(), Is.EqualTo("abc"u8.ToArray()));
        lazy.Input.AdvanceTo(result.Buffer.End);
    }

    [Test]
    public async Task SelectOneLazy_ListenerSaysNa_FirstReadThrowsProtocolNotSupported()
    {
        var (dialer, listener) = PipePair.Create();
        var lazy = await MultistreamSelect.SelectOneLazyAsync(dialer, "/noise", Options, default);
        await listener.Output.WriteAsync(Concat(Msg("/multistream/1.0.0"), Msg("na")));
        Assert.ThrowsAsync<ProtocolNotSupportedException>(async () => await lazy.Input.ReadAsync());
    }

    [Test]
    public async Task SelectOneLazy_StreamEndsBeforeEcho_IsThePeerGoingAway()
    {
        var (dialer, listener) = PipePair.Create();
        var lazy = await MultistreamSelect.SelectOneLazyAsync(dialer, "/noise", Options, default);
        await listener.Output.WriteAsync(Msg("/multistream/1.0.0"));
        await listener.Output.CompleteAsync();
        Assert.ThrowsAsync<PeerGoneException>(async () => await lazy.Input.ReadAsync());
    }

    [Test]
    public async Task SelectOneLazy_CancelledReadBeforeEcho_ThenContinues()
    {
        var (dialer, listener) = PipePair.Create();
        var lazy = await MultistreamSelect.SelectOneLazyAsync(dialer, "/noise", Options, default);
        await listener.Output.WriteAsync(Msg("/multistream/1.0.0"));
        var reading = lazy.Input.ReadAsync().AsTask();
        lazy.Input.CancelPendingRead();
        var cancelled = await reading;
        Assert.That(cancelled.IsCanceled, Is.True);
        Assert.That(cancelled.Buffer.IsEmpty, Is.True);
        lazy.Input.AdvanceTo(cancelled.Buffer.Start);

        await listener.Output.WriteAsync(Concat(Msg("/noise"), "x"u8.ToArray()));
        Assert.That(await PipePair.ReadExactlyAsync(lazy.Input, 1), Is.EqualTo("x"u8.ToArray()));
    }
}
