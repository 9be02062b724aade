using System.Buffers;
using System.IO.Pipelines;
using Potluck.Protocol.Framing;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Security;
using Potluck.Protocol.Tests.Noise;

namespace Potluck.Protocol.Tests.Security;

/// <summary>The plaintext-sim stand-in: it identifies both ends and is bounded against a remote that lies or floods.</summary>
[Category("fast")]
public sealed class PlaintextSimSecurityTests
{
    private static readonly PrivateKey Alice = PrivateKey.FromSeed(Enumerable.Repeat((byte)1, 32).ToArray());
    private static readonly PrivateKey Bob = PrivateKey.FromSeed(Enumerable.Repeat((byte)2, 32).ToArray());

    [Test, CancelAfter(30_000)]
    public async Task Handshake_IdentifiesBothEnds_AndBytesFlowUnchanged(CancellationToken ct)
    {
        var (a, b) = NoiseTestSupport.CreatePair();
        var dial = new PlaintextSimSecurity(Alice.PublicKey).SecureAsync(a, true, Bob.PeerId, ct).AsTask();
        var accept = new PlaintextSimSecurity(Bob.PublicKey).SecureAsync(b, false, null, ct).AsTask();
        var alice = await dial;
        var bob = await accept;

        Assert.That(alice.RemotePeer, Is.EqualTo(Bob.PeerId));
        Assert.That(bob.RemotePeer, Is.EqualTo(Alice.PeerId));
        Assert.That(alice.RemoteEarlyMuxers, Is.Empty);
        await alice.Output.WriteAsync("hello"u8.ToArray(), ct);
        var read = await bob.Input.ReadAtLeastAsync(5, ct);
        Assert.That(read.Buffer.Slice(0, 5).ToArray(), Is.EqualTo("hello"u8.ToArray()));
        bob.Input.AdvanceTo(read.Buffer.GetPosition(5));
        await alice.DisposeAsync();
        await bob.DisposeAsync();
        await a.Disposed;
    }

    [Test, CancelAfter(30_000)]
    public async Task Dialer_ExpectingAnotherPeer_FailsWithWrongPeer_AndClosesTheConnection(CancellationToken ct)
    {
        var (a, b) = NoiseTestSupport.CreatePair();
        var dial = new PlaintextSimSecurity(Alice.PublicKey).SecureAsync(a, true, Alice.PeerId, ct).AsTask();
        var accept = new PlaintextSimSecurity(Bob.PublicKey).SecureAsync(b, false, null, ct).AsTask();

        var e = await AsyncAssert.ThrowsAsync<ProtocolViolationException>(() => dial);
        Assert.That(e.Code, Is.EqualTo(ViolationCode.WrongPeer));
        Assert.That(e.Radius, Is.EqualTo(BlastRadius.Connection));
        await a.Disposed;
        await (await accept).DisposeAsync();
    }

    [Test, CancelAfter(30_000)]
    public async Task RemoteClaimingAHugeKeyFrame_IsRefusedBeforeAnyAllocation(CancellationToken ct)
    {
        var (a, b) = NoiseTestSupport.CreatePair();
        var accept = new PlaintextSimSecurity(Bob.PublicKey).SecureAsync(b, false, null, ct).AsTask();
        // A length prefix of 1 GiB, then nothing: the reader must refuse on the prefix alone.
        var prefix = new byte[10];
        var n = Varint.Write(prefix, 1UL << 30);
        await a.Output.WriteAsync(prefix.AsMemory(0, n), ct);

        var e = await AsyncAssert.ThrowsAsync<ProtocolViolationException>(() => accept);
        Assert.That(e.Code, Is.EqualTo(ViolationCode.TooLarge));
        Assert.That(e.Radius, Is.EqualTo(BlastRadius.Connection));
        await b.Disposed;
    }

    [Test, CancelAfter(30_000)]
    public async Task RemoteSendingBytesThatAreNoKey_FailsMalformed(CancellationToken ct)
    {
        var (a, b) = NoiseTestSupport.CreatePair();
        var accept = new PlaintextSimSecurity(Bob.PublicKey).SecureAsync(b, false, null, ct).AsTask();
        LengthPrefixed.Write(a.Output, new byte[] { 0xFF, 0x01, 0x02, 0x03 });
        await a.Output.FlushAsync(ct);

        var e = await AsyncAssert.ThrowsAsync<ProtocolViolationException>(() => accept);
        Assert.That(e.Code, Is.EqualTo(ViolationCode.Malformed));
        await b.Disposed;
    }

    [Test, CancelAfter(30_000)]
    public async Task RemoteClosingMidHandshake_IsPeerGone(CancellationToken ct)
    {
        var (a, b) = NoiseTestSupport.CreatePair();
        var accept = new PlaintextSimSecurity(Bob.PublicKey).SecureAsync(b, false, null, ct).AsTask();
        await a.Output.WriteAsync(new byte[] { 36, 8 }, ct); // a frame of 36 bytes, 1 sent
        await a.Output.CompleteAsync();

        await AsyncAssert.ThrowsAsync<Exception>(() => accept);
        Assert.That(Failures.Classify(accept.Exception!.InnerException!).Kind, Is.AnyOf(FailureKind.PeerGone, FailureKind.ProtocolViolation));
        await b.Disposed;
    }

    [Test, CancelAfter(30_000)]
    public async Task RemoteThatStalls_IsUnblockedByTheCallersDeadline(CancellationToken ct)
    {
        var (_, b) = NoiseTestSupport.CreatePair();
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var accept = new PlaintextSimSecurity(Bob.PublicKey).SecureAsync(b, false, null, cts.Token).AsTask();
        Assert.That(accept.IsCompleted, Is.False);

        cts.Cancel();

        await AsyncAssert.ThrowsAsync<OperationCanceledException>(() => accept);
        await b.Disposed;
    }
}
