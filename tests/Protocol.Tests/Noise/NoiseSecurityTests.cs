using System.Buffers;
using System.Buffers.Binary;
using System.IO.Pipelines;
using System.Security.Cryptography;
using Microsoft.Extensions.Logging.Abstractions;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Noise;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Security;
using static Potluck.Protocol.Tests.Noise.NoiseTestSupport;

namespace Potluck.Protocol.Tests.Noise;

public class NoiseSecurityTests
{
    private static readonly PrivateKey AliceKey = Key(1);
    private static readonly PrivateKey BobKey = Key(2);

    [Test]
    public void ProtocolId_IsSlashNoise()
    {
        ISecurityProtocol noise = Create(AliceKey);
        Assert.That(noise.ProtocolId, Is.EqualTo("/noise"));
    }

    [Test, CancelAfter(30_000)]
    public async Task Handshake_BothWays_ProvesEachPeerToTheOtherAndCarriesDataBothWays(CancellationToken ct)
    {
        var (a, b) = CreatePair();
        var (alice, bob) = await HandshakeAsync(Create(AliceKey), Create(BobKey), a, b, ct, BobKey.PeerId);

        Assert.That(alice.RemotePeer, Is.EqualTo(BobKey.PeerId));
        Assert.That(alice.RemotePublicKey, Is.EqualTo(BobKey.PublicKey));
        Assert.That(bob.RemotePeer, Is.EqualTo(AliceKey.PeerId));
        Assert.That(alice.RemoteEarlyMuxers, Is.Empty);

        await alice.Output.WriteAsync("ping"u8.ToArray(), ct);
        Assert.That(await ReadExactlyAsync(bob.Input, 4, ct), Is.EqualTo("ping"u8.ToArray()));
        await bob.Output.WriteAsync("pong"u8.ToArray(), ct);
        Assert.That(await ReadExactlyAsync(alice.Input, 4, ct), Is.EqualTo("pong"u8.ToArray()));

        await alice.DisposeAsync();
        await bob.DisposeAsync();
    }

    [Test, CancelAfter(60_000)]
    public async Task Transfer_10MiBEachWayAtOnce_ArrivesIntactAndHalfCloses(CancellationToken ct)
    {
        var (a, b) = CreatePair();
        var (alice, bob) = await HandshakeAsync(Create(AliceKey), Create(BobKey), a, b, ct);
        var random = new Random(1234);
        var toBob = new byte[10 << 20];
        var toAlice = new byte[10 << 20];
        random.NextBytes(toBob);
        random.NextBytes(toAlice);

        var writes = Task.WhenAll(
            WriteAllAsync(alice.Output, toBob, new Random(1), ct),
            WriteAllAsync(bob.Output, toAlice, new Random(2), ct));
        var atBob = ReadToEndAsync(bob.Input, ct);
        var atAlice = ReadToEndAsync(alice.Input, ct);
        await writes;

        Assert.That(SHA256.HashData(await atBob), Is.EqualTo(SHA256.HashData(toBob)));
        Assert.That(SHA256.HashData(await atAlice), Is.EqualTo(SHA256.HashData(toAlice)));
        await alice.DisposeAsync();
        await bob.DisposeAsync();
    }

    [Test, CancelAfter(30_000)]
    public async Task Write_LargerThanOneFrame_IsSplitIntoFramesOfAtMost65519PlaintextBytes(CancellationToken ct)
    {
        var (a, b, aToB, _) = CreateRelayedPair();
        var (alice, bob) = await HandshakeAsync(Create(AliceKey), Create(BobKey), a, b, ct);
        aToB.Recording = new MemoryStream();
        var data = new byte[200_000];
        new Random(5).NextBytes(data);

        await alice.Output.WriteAsync(data, ct);
        Assert.That(await ReadExactlyAsync(bob.Input, data.Length, ct), Is.EqualTo(data));

        var wire = aToB.Recording.ToArray();
        var frames = new List<int>();
        for (var i = 0; i < wire.Length;)
        {
            var length = BinaryPrimitives.ReadUInt16BigEndian(wire.AsSpan(i));
            frames.Add(length - 16);
            i += 2 + length;
        }
        Assert.That(frames.Sum(), Is.EqualTo(data.Length));
        // Full frames carry 65518 bytes, so that a sealed frame fills exactly one 64 KiB buffer.
        Assert.That(frames.Max(), Is.EqualTo(65518));
        Assert.That(frames, Has.All.GreaterThan(0).And.All.LessThanOrEqualTo(65519));
        await alice.DisposeAsync();
        await bob.DisposeAsync();
    }

    [Test, CancelAfter(30_000)]
    public async Task Handshake_RemoteIsNotTheExpectedPeer_FailsWithPeerMismatch(CancellationToken ct)
    {
        var (a, b) = CreatePair();
        var initiator = Create(AliceKey).SecureAsync(a, true, Key(3).PeerId, ct).AsTask();
        var responder = Create(BobKey).SecureAsync(b, false, null, ct).AsTask();

        var mismatch = Assert.ThrowsAsync<PeerMismatchException>(() => initiator);
        Assert.That(mismatch!.Actual, Is.EqualTo(BobKey.PeerId));
        Assert.That(mismatch.Expected, Is.EqualTo(Key(3).PeerId));
        // The initiator closed the connection instead of sending message 3.
        Assert.ThrowsAsync<PeerGoneException>(() => responder);
        await a.Disposed;
    }

    [Test, CancelAfter(30_000)]
    public async Task TransportFrame_WithAFlippedByte_IsViolationAndClosesTheConnection(CancellationToken ct)
    {
        var (a, b, aToB, _) = CreateRelayedPair();
        var (alice, bob) = await HandshakeAsync(Create(AliceKey), Create(BobKey), a, b, ct);
        aToB.FlipAt = aToB.Count + 10;

        await alice.Output.WriteAsync(new byte[1000], ct);

        var violation = Assert.ThrowsAsync<ProtocolViolationException>(async () => await ReadToEndAsync(bob.Input, ct));
        Assert.That(violation!.Protocol, Is.EqualTo("/noise"));
        await b.Disposed;
        // Alice sees the connection end.
        Assert.That(await ReadToEndAsync(alice.Input, ct), Is.Empty);
        await alice.DisposeAsync();
        await bob.DisposeAsync();
    }

    [Test, CancelAfter(30_000)]
    public async Task Handshake_PeerSilentFromTheStart_IsUnblockedByCancellation(CancellationToken ct)
    {
        var (_, b) = CreatePair();
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var responder = Create(BobKey).SecureAsync(b, false, null, cts.Token).AsTask();
        Assert.That(responder.IsCompleted, Is.False);

        cts.Cancel();

        Assert.That(async () => await responder, Throws.InstanceOf<OperationCanceledException>());
        await b.Disposed;
    }

    [Test, CancelAfter(30_000)]
    public async Task Handshake_PeerStallsAfterMessage1_IsUnblockedByCancellationAndClosed(CancellationToken ct)
    {
        var ab = new Pipe();
        var ba = new Pipe();
        var a = new TestDuplex(ba.Reader, ab.Writer);
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var initiator = Create(AliceKey).SecureAsync(a, true, null, cts.Token).AsTask();
        var message1 = await ReadExactlyAsync(ab.Reader, 2 + 32, ct);
        Assert.That(BinaryPrimitives.ReadUInt16BigEndian(message1), Is.EqualTo(32));
        Assert.That(initiator.IsCompleted, Is.False);

        cts.Cancel();

        Assert.That(async () => await initiator, Throws.InstanceOf<OperationCanceledException>());
        await a.Disposed;
        Assert.That(await ReadToEndAsync(ab.Reader, ct), Is.Empty, "the initiator's side of the connection is completed");
    }

    [Test, CancelAfter(30_000)]
    public async Task Handshake_EarlyMuxerLists_AreExchanged(CancellationToken ct)
    {
        var (a, b) = CreatePair();
        var (alice, bob) = await HandshakeAsync(
            Create(AliceKey, "/yamux/1.0.0"), Create(BobKey, "/yamux/1.0.0", "/mplex/6.7.0"), a, b, ct);

        Assert.That(alice.RemoteEarlyMuxers, Is.EqualTo(new[] { "/yamux/1.0.0", "/mplex/6.7.0" }));
        Assert.That(bob.RemoteEarlyMuxers, Is.EqualTo(new[] { "/yamux/1.0.0" }));
        await alice.DisposeAsync();
        await bob.DisposeAsync();
    }

    [TestCase(KeyType.Rsa, true), TestCase(KeyType.Rsa, false)]
    [TestCase(KeyType.Secp256k1, true), TestCase(KeyType.Secp256k1, false)]
    [TestCase(KeyType.Ecdsa, true), TestCase(KeyType.Ecdsa, false)]
    [CancelAfter(30_000)]
    public async Task Handshake_RemoteWithNonEd25519Identity_IsAcceptedAndIdentified(KeyType type, bool remoteInitiates, CancellationToken ct)
    {
        var identity = ForeignIdentity.Of(type);
        var foreign = new NoiseSecurity(identity.PublicKey, identity.Sign, new NoiseOptions(), NodeRuntime.System, NullLoggerFactory.Instance);
        var expected = identity.PublicKey.ToPeerId();
        var (a, b) = CreatePair();
        var (first, second) = remoteInitiates
            ? await HandshakeAsync(foreign, Create(BobKey), a, b, ct, BobKey.PeerId)
            : await HandshakeAsync(Create(BobKey), foreign, a, b, ct, expected);
        var (ours, theirs) = remoteInitiates ? (second, first) : (first, second);

        Assert.That(ours.RemotePeer, Is.EqualTo(expected));
        Assert.That(ours.RemotePublicKey.Type, Is.EqualTo(type));
        Assert.That(theirs.RemotePeer, Is.EqualTo(BobKey.PeerId));
        await theirs.Output.WriteAsync("hi"u8.ToArray(), ct);
        Assert.That(await ReadExactlyAsync(ours.Input, 2, ct), Is.EqualTo("hi"u8.ToArray()));
        await ours.DisposeAsync();
        await theirs.DisposeAsync();
    }

    [Test, CancelAfter(30_000)]
    public async Task Channel_OutputCompleted_RemoteInputEndsAfterAllData(CancellationToken ct)
    {
        var (a, b) = CreatePair();
        var (alice, bob) = await HandshakeAsync(Create(AliceKey), Create(BobKey), a, b, ct);

        await alice.Output.WriteAsync("last words"u8.ToArray(), ct);
        await alice.Output.CompleteAsync();

        Assert.That(await ReadToEndAsync(bob.Input, ct), Is.EqualTo("last words"u8.ToArray()));
        await alice.DisposeAsync();
        await bob.DisposeAsync();
    }

    [Test, CancelAfter(30_000)]
    public async Task Channel_WritesNeverFlushed_AreEncryptedAndSentWhenOutputCompletes(CancellationToken ct)
    {
        var (a, b) = CreatePair();
        var (alice, bob) = await HandshakeAsync(Create(AliceKey), Create(BobKey), a, b, ct);
        var data = RandomNumberGenerator.GetBytes(700_000); // several frames and more than one encryption batch
        for (var offset = 0; offset < data.Length; offset += 10_000)
        {
            var chunk = data.AsSpan(offset, Math.Min(10_000, data.Length - offset));
            chunk.CopyTo(alice.Output.GetSpan(chunk.Length));
            alice.Output.Advance(chunk.Length); // staged, never flushed
        }
        alice.Output.Complete();

        Assert.That(await ReadToEndAsync(bob.Input, ct), Is.EqualTo(data));
        await alice.DisposeAsync();
        await bob.DisposeAsync();
    }

    [Test, CancelAfter(30_000)]
    public async Task Channel_OneFlushOfManyBatches_ArrivesInOrder(CancellationToken ct)
    {
        var (a, b) = CreatePair();
        var (alice, bob) = await HandshakeAsync(Create(AliceKey), Create(BobKey), a, b, ct);
        var data = RandomNumberGenerator.GetBytes(3 << 20);
        var reading = ReadToEndAsync(bob.Input, ct);
        alice.Output.Write(data.AsSpan());
        var flush = await alice.Output.FlushAsync(ct);
        Assert.That(flush.IsCompleted || flush.IsCanceled, Is.False);
        await alice.Output.CompleteAsync();

        Assert.That(await reading, Is.EqualTo(data));
        await alice.DisposeAsync();
        await bob.DisposeAsync();
    }

    [Test, CancelAfter(30_000)]
    public async Task Dispose_IsAbortive_LocalReadsEndWritesFailAndTheRemoteSeesTheEnd(CancellationToken ct)
    {
        var (a, b) = CreatePair();
        var (alice, bob) = await HandshakeAsync(Create(AliceKey), Create(BobKey), a, b, ct);

        await alice.DisposeAsync();

        await a.Disposed;
        Assert.That(await ReadToEndAsync(alice.Input, ct), Is.Empty);
        Assert.That(async () => await alice.Output.WriteAsync(new byte[10], ct), Throws.InstanceOf<IOException>());
        Assert.That(await ReadToEndAsync(bob.Input, ct), Is.Empty);
        await bob.DisposeAsync();
    }

    [FsCheck.NUnit.Property(MaxTest = 100)]
    public bool Responder_RandomHandshakeBytes_FailsWithATypedError(byte[] message1, byte[] message3, bool framed)
    {
        var (a, b) = CreatePair();
        var script = framed ? Frame(message1).Concat(Frame(message3)).ToArray() : message1.Concat(message3).ToArray();
        a.Output.WriteAsync(script).AsTask().GetAwaiter().GetResult();
        a.Output.Complete();
        return FailsTyped(Create(BobKey).SecureAsync(b, false, null, CancellationToken.None).AsTask());
    }

    [FsCheck.NUnit.Property(MaxTest = 100)]
    public bool Initiator_RandomHandshakeBytes_FailsWithATypedError(byte[] message2, bool framed)
    {
        var (a, b) = CreatePair();
        b.Output.WriteAsync(framed ? Frame(message2) : message2).AsTask().GetAwaiter().GetResult();
        b.Output.Complete();
        return FailsTyped(Create(AliceKey).SecureAsync(a, true, null, CancellationToken.None).AsTask());
    }

    [FsCheck.NUnit.Property(MaxTest = 100)]
    public bool Handshake_OneMessageByteFlippedInFlight_FailsTypedOnTheResponderAndNeverHangs(int seed, bool towardsResponder)
    {
        var (a, b, aToB, bToA) = CreateRelayedPair();
        // Both directions carry 200 message bytes besides the length prefixes (Ed25519 payloads of 104 bytes).
        (towardsResponder ? aToB : bToA).FlipBodyByte = (uint)seed * 2654435761u % 200;
        var initiator = Create(AliceKey).SecureAsync(a, true, null, CancellationToken.None).AsTask();
        var responder = Create(BobKey).SecureAsync(b, false, null, CancellationToken.None).AsTask();

        var responderFailed = FailsTyped(responder);
        if (FailsTyped(initiator))
        {
            return responderFailed;
        }
        // Only a corrupted message 3 lets the initiator finish: it learns of the failure from the closed connection.
        var initiatorOk = initiator.Status == TaskStatus.RanToCompletion;
        if (initiatorOk)
        {
            initiator.Result.DisposeAsync().AsTask().GetAwaiter().GetResult();
        }
        return responderFailed && initiatorOk && towardsResponder;
    }

    private static byte[] Frame(byte[] message)
    {
        var body = message.Length > 65535 ? message[..65535] : message;
        var frame = new byte[2 + body.Length];
        BinaryPrimitives.WriteUInt16BigEndian(frame, (ushort)body.Length);
        body.CopyTo(frame, 2);
        return frame;
    }

    /// <summary>True when the handshake ends in a violation or a closed connection (a generous bound guards against hangs).</summary>
    private static bool FailsTyped(Task task)
    {
        try
        {
            task.Wait(TimeSpan.FromSeconds(20));
            return false;
        }
        catch (AggregateException e) when (e.InnerException is ProtocolViolationException or PeerGoneException)
        {
            return true;
        }
    }
}
