using System.Buffers;
using System.Buffers.Binary;
using System.IO.Pipelines;
using Microsoft.Extensions.Logging.Abstractions;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Noise;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Security;
using static Potluck.Protocol.Tests.Noise.NoiseTestSupport;

namespace Potluck.Protocol.Tests.Noise;

/// <summary>
/// Drives the initiator by hand with the internal handshake state, so the tests can put arbitrary frames on
/// the wire towards a real responder channel.
/// </summary>
public class NoiseTransportFramingTests
{
    private static readonly PrivateKey AliceKey = Key(21);
    private static readonly PrivateKey BobKey = Key(22);

    private sealed class ManualPeer : IAsyncDisposable
    {
        public required NoiseCipherState Send { get; init; }
        public required NoiseCipherState Receive { get; init; }
        public required PipeWriter Raw { get; init; }
        public required PipeReader RawIn { get; init; }
        public required ISecureChannel Bob { get; init; }
        public required TestDuplex BobTransport { get; init; }

        public byte[] Seal(byte[] plaintext)
        {
            var frame = new byte[2 + plaintext.Length + 16];
            BinaryPrimitives.WriteUInt16BigEndian(frame, (ushort)(plaintext.Length + 16));
            Send.Encrypt(default, plaintext, frame.AsSpan(2));
            return frame;
        }

        public async Task SendFrameAsync(byte[] plaintext, CancellationToken ct) => await Raw.WriteAsync(Seal(plaintext), ct);

        public async ValueTask DisposeAsync()
        {
            await Bob.DisposeAsync();
            Send.Dispose();
            Receive.Dispose();
        }
    }

    private static async Task<ManualPeer> HandshakeByHandAsync(CancellationToken ct, NoiseOptions? options = null)
    {
        var (a, b) = CreatePair();
        var security = options is null ? Create(BobKey) : new NoiseSecurity(BobKey, options, NodeRuntime.System, NullLoggerFactory.Instance);
        var bob = security.SecureAsync(b, false, AliceKey.PeerId, ct).AsTask();
        using var staticKey = X25519KeyPair.Generate();
        using var state = new NoiseHandshakeState(true, staticKey, []);

        await a.Output.WriteAsync(Frame(state, []), ct);
        var header = await ReadExactlyAsync(a.Input, 2, ct);
        var message2 = await ReadExactlyAsync(a.Input, BinaryPrimitives.ReadUInt16BigEndian(header), ct);
        var payload = new byte[message2.Length];
        var n = state.ReadMessage(message2, payload);
        Assert.That(NoisePayload.Verify(payload.AsSpan(0, n), state.RemoteStaticKey, new NoiseOptions()).Peer, Is.EqualTo(BobKey.PeerId));
        var ours = NoisePayload.Encode(AliceKey.PublicKey, AliceKey.Sign(NoisePayload.SignedData(staticKey.PublicKey)), []);
        await a.Output.WriteAsync(Frame(state, ours), ct);

        var (send, receive) = state.Split();
        return new ManualPeer { Send = send, Receive = receive, Raw = a.Output, RawIn = a.Input, Bob = await bob, BobTransport = b };
    }

    private static byte[] Frame(NoiseHandshakeState state, byte[] payload)
    {
        var length = state.MessageLength(payload.Length);
        var frame = new byte[2 + length];
        BinaryPrimitives.WriteUInt16BigEndian(frame, (ushort)length);
        state.WriteMessage(payload, frame.AsSpan(2));
        return frame;
    }

    [Test, CancelAfter(30_000)]
    public async Task ManualInitiator_FramesOfEverySize_ArriveInOrderIncludingEmptyAndMaximal(CancellationToken ct)
    {
        await using var peer = await HandshakeByHandAsync(ct);
        var sizes = new[] { 0, 1, 0, 65519, 17, 0, 4096 };
        var random = new Random(3);
        var expected = new MemoryStream();
        foreach (var size in sizes)
        {
            var chunk = new byte[size];
            random.NextBytes(chunk);
            expected.Write(chunk);
            await peer.SendFrameAsync(chunk, ct);
        }
        await peer.Raw.CompleteAsync();

        Assert.That(await ReadToEndAsync(peer.Bob.Input, ct), Is.EqualTo(expected.ToArray()));
    }

    [Test, CancelAfter(30_000)]
    public async Task TransportFrame_ShorterThanTheTag_IsViolation(CancellationToken ct)
    {
        await using var peer = await HandshakeByHandAsync(ct);
        await peer.SendFrameAsync("fine"u8.ToArray(), ct);
        Assert.That(await ReadExactlyAsync(peer.Bob.Input, 4, ct), Is.EqualTo("fine"u8.ToArray()));

        await peer.Raw.WriteAsync(new byte[] { 0x00, 0x0F }.Concat(new byte[15]).ToArray(), ct);

        Assert.ThrowsAsync<ProtocolViolationException>(async () => await ReadToEndAsync(peer.Bob.Input, ct));
    }

    [Test, CancelAfter(30_000)]
    public async Task Connection_ClosedInsideATransportFrame_IsViolation(CancellationToken ct)
    {
        await using var peer = await HandshakeByHandAsync(ct);
        await peer.Raw.WriteAsync(new byte[] { 0x01, 0x00, 1, 2, 3 }, ct);
        await peer.Raw.CompleteAsync();

        Assert.ThrowsAsync<ProtocolViolationException>(async () => await ReadToEndAsync(peer.Bob.Input, ct));
    }

    [Test, CancelAfter(30_000)]
    public async Task TransportFrame_Replayed_FailsAuthentication(CancellationToken ct)
    {
        await using var peer = await HandshakeByHandAsync(ct);
        var frame = new byte[2 + 3 + 16];
        BinaryPrimitives.WriteUInt16BigEndian(frame, 19);
        peer.Send.Encrypt(default, "abc"u8, frame.AsSpan(2));
        await peer.Raw.WriteAsync(frame, ct);
        Assert.That(await ReadExactlyAsync(peer.Bob.Input, 3, ct), Is.EqualTo("abc"u8.ToArray()));

        await peer.Raw.WriteAsync(frame, ct);

        Assert.ThrowsAsync<ProtocolViolationException>(async () => await ReadToEndAsync(peer.Bob.Input, ct));
    }

    [Test, CancelAfter(30_000)]
    public async Task Responder_Writes_AreOneFrameDecryptableWithTheSplitCipher(CancellationToken ct)
    {
        await using var peer = await HandshakeByHandAsync(ct);
        await peer.Bob.Output.WriteAsync("from bob"u8.ToArray(), ct);
        await peer.Bob.Output.CompleteAsync();

        var wire = await ReadToEndAsync(peer.RawIn, ct);
        Assert.That(BinaryPrimitives.ReadUInt16BigEndian(wire), Is.EqualTo(8 + 16));
        Assert.That(wire, Has.Length.EqualTo(2 + 8 + 16), "one frame, then the half-close");
        var plaintext = new byte[8];
        Assert.That(peer.Receive.TryDecrypt(default, wire.AsSpan(2), plaintext), Is.True);
        Assert.That(plaintext, Is.EqualTo("from bob"u8.ToArray()));
    }

    [Test, CancelAfter(30_000)]
    public async Task Frame_SplitAcrossManyReads_ArrivesWholeOnceItsLastByteDoes(CancellationToken ct)
    {
        await using var peer = await HandshakeByHandAsync(ct);
        var plaintext = new byte[3000];
        new Random(11).NextBytes(plaintext);
        var frame = peer.Seal(plaintext);
        var input = (NoiseInput)peer.Bob.Input;
        var read = input.ReadAsync(ct);

        // Every byte but the last arrives on a connection read of its own: nothing is handed out, nothing is buffered.
        for (var i = 0; i < frame.Length - 1; i++)
        {
            await peer.Raw.WriteAsync(frame.AsMemory(i, 1), ct);
            Assert.That(read.IsCompleted, Is.False, $"after {i + 1} of {frame.Length} bytes");
        }
        Assert.That(input.HoldsMemory, Is.False);
        await peer.Raw.WriteAsync(frame.AsMemory(frame.Length - 1), ct);

        var result = await read;
        Assert.That(result.Buffer.ToArray(), Is.EqualTo(plaintext));
        input.AdvanceTo(result.Buffer.End);
        Assert.That(input.HoldsMemory, Is.False, "an idle channel holds no buffer");
    }

    [Test, CancelAfter(30_000)]
    public async Task TamperedFrame_MidStream_DeliversWhatCameBeforeThenFailsEveryReadAndClosesTheConnection(CancellationToken ct)
    {
        await using var peer = await HandshakeByHandAsync(ct);
        var first = peer.Seal("first"u8.ToArray());
        var second = peer.Seal("second"u8.ToArray());
        second[5] ^= 0x20; // a ciphertext byte
        var third = peer.Seal("third"u8.ToArray());
        await peer.Raw.WriteAsync(first.Concat(second).Concat(third).ToArray(), ct);

        Assert.That(await ReadExactlyAsync(peer.Bob.Input, 5, ct), Is.EqualTo("first"u8.ToArray()));
        var violation = Assert.ThrowsAsync<ProtocolViolationException>(async () => await peer.Bob.Input.ReadAsync(ct));
        Assert.That(violation!.Code, Is.EqualTo(ViolationCode.BadSignature));
        Assert.That(violation.Radius, Is.EqualTo(BlastRadius.Connection));
        Assert.ThrowsAsync<ProtocolViolationException>(async () => await peer.Bob.Input.ReadAsync(ct), "later reads fail too");
        await peer.BobTransport.Disposed;
        // The honest side sees the connection end, and Bob's writes now fail.
        Assert.That(await ReadToEndAsync(peer.RawIn, ct), Is.Empty);
        Assert.That(async () => await peer.Bob.Output.WriteAsync(new byte[1], ct), Throws.InstanceOf<IOException>());
    }

    [Test, CancelAfter(30_000)]
    public async Task Connection_ClosedMidFrame_DeliversTheWholeFramesThenIsViolation(CancellationToken ct)
    {
        await using var peer = await HandshakeByHandAsync(ct);
        var whole = peer.Seal("whole"u8.ToArray());
        var cut = peer.Seal(new byte[500]);
        await peer.Raw.WriteAsync(whole.Concat(cut.Take(200)).ToArray(), ct);
        Assert.That(await ReadExactlyAsync(peer.Bob.Input, 5, ct), Is.EqualTo("whole"u8.ToArray()));
        var parked = peer.Bob.Input.ReadAsync(ct);
        Assert.That(parked.IsCompleted, Is.False, "200 bytes of a 518-byte frame are not a frame");

        await peer.Raw.CompleteAsync();

        var violation = Assert.ThrowsAsync<ProtocolViolationException>(async () => await parked);
        Assert.That(violation!.Code, Is.EqualTo(ViolationCode.Malformed));
        await peer.BobTransport.Disposed;
    }

    [Test, CancelAfter(30_000)]
    public async Task Dispose_WhileAReadWaitsMidFrame_EndsTheReadAndClosesTheConnection(CancellationToken ct)
    {
        var peer = await HandshakeByHandAsync(ct);
        await peer.Raw.WriteAsync(peer.Seal(new byte[500]).Take(100).ToArray(), ct);
        var parked = peer.Bob.Input.ReadAsync(ct);
        Assert.That(parked.IsCompleted, Is.False);

        await peer.DisposeAsync();

        var result = await parked;
        Assert.That(result.IsCompleted, Is.True);
        Assert.That(result.Buffer.IsEmpty, Is.True);
        await peer.BobTransport.Disposed;
        Assert.That(await ReadToEndAsync(peer.RawIn, ct), Is.Empty);
    }

    [Test, CancelAfter(30_000)]
    public async Task Reader_ThatStopsReading_WhileThePeerFloods_BuffersNothingAndHoldsThePeerBack(CancellationToken ct)
    {
        await using var peer = await HandshakeByHandAsync(ct);
        var input = (NoiseInput)peer.Bob.Input;
        await peer.SendFrameAsync("hello"u8.ToArray(), ct);
        Assert.That(await ReadExactlyAsync(input, 5, ct), Is.EqualTo("hello"u8.ToArray()));

        // Bob stops reading. The flood is decrypted by nobody: it stops in the connection, whose writer is held back.
        var sent = 0;
        ValueTask<FlushResult> flush;
        while ((flush = peer.Raw.WriteAsync(peer.Seal(new byte[NoiseFrame.MaxPlaintextLength]), ct)).IsCompleted)
        {
            sent++;
            Assert.That(sent, Is.LessThan(100), "the flood was never held back");
        }
        Assert.That(sent, Is.EqualTo(15), "held back by the connection's 1 MiB, not by a buffer of the channel's");
        Assert.That(input.Buffered, Is.Zero);
        Assert.That(input.HoldsMemory, Is.False);

        // Reading again lets it through, frame by frame.
        var frames = 0;
        while (frames < sent + 1)
        {
            var result = await input.ReadAsync(ct);
            Assert.That(result.Buffer.Length, Is.LessThanOrEqualTo(1 << 20));
            frames += (int)(result.Buffer.Length / NoiseFrame.MaxPlaintextLength);
            input.AdvanceTo(result.Buffer.GetPosition(result.Buffer.Length / NoiseFrame.MaxPlaintextLength * NoiseFrame.MaxPlaintextLength), result.Buffer.End);
        }
        Assert.That((await flush).IsCompleted, Is.False);
    }

    [Test, CancelAfter(30_000)]
    public async Task Reader_ThatNeverConsumes_IsStoppedAtTheInboundLimitWithATypedError(CancellationToken ct)
    {
        var options = new NoiseOptions { MaxBufferedInbound = 200_000 };
        await using var peer = await HandshakeByHandAsync(ct, options);
        var input = (NoiseInput)peer.Bob.Input;
        var flood = Task.Run(async () =>
        {
            for (var i = 0; i < 20; i++)
            {
                if ((await peer.Raw.WriteAsync(peer.Seal(new byte[NoiseFrame.MaxPlaintextLength]), ct)).IsCompleted)
                {
                    return;
                }
            }
        }, ct);

        // Bob examines everything and consumes nothing: once the limit is reached, asking for more is a violation.
        var violation = Assert.ThrowsAsync<ProtocolViolationException>(async () =>
        {
            while (true)
            {
                var result = await input.ReadAsync(ct);
                Assert.That(result.Buffer.Length, Is.LessThanOrEqualTo(200_000));
                input.AdvanceTo(result.Buffer.Start, result.Buffer.End);
            }
        });
        Assert.That(violation!.Code, Is.EqualTo(ViolationCode.TooLarge));
        await peer.BobTransport.Disposed;
        await flood;
    }
}
