using System.Buffers.Binary;
using System.IO.Pipelines;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Noise;
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

        public async Task SendFrameAsync(byte[] plaintext, CancellationToken ct)
        {
            var frame = new byte[2 + plaintext.Length + 16];
            BinaryPrimitives.WriteUInt16BigEndian(frame, (ushort)(plaintext.Length + 16));
            Send.Encrypt(default, plaintext, frame.AsSpan(2));
            await Raw.WriteAsync(frame, ct);
        }

        public async ValueTask DisposeAsync()
        {
            await Bob.DisposeAsync();
            Send.Dispose();
            Receive.Dispose();
        }
    }

    private static async Task<ManualPeer> HandshakeByHandAsync(CancellationToken ct)
    {
        var (a, b) = CreatePair();
        var bob = Create(BobKey).SecureAsync(b, false, AliceKey.PeerId, ct).AsTask();
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
        return new ManualPeer { Send = send, Receive = receive, Raw = a.Output, RawIn = a.Input, Bob = await bob };
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
}
