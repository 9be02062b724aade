using System.Buffers;
using System.IO.Pipelines;
using System.Security.Cryptography;
using Potluck.Protocol.Multistream;
using Potluck.Protocol.Pnet;
using Potluck.Protocol.Tests.Multistream;

namespace Potluck.Protocol.Tests.Pnet;

public class PnetProtectorTests
{
    // NaCl / libsodium crypto_stream_xsalsa20 test vectors (tests/stream.c and tests/stream3.c).
    private static readonly byte[] NaclKey = Convert.FromHexString("1b27556473e985d462cd51197a9a46c76009549eac6474f206c4ee0844f68389");
    private static readonly byte[] NaclNonce = Convert.FromHexString("69696ee955b62b73cd62bda875fc73d68219e0036b7a0b37");
    private static readonly byte[] NaclFirst32 = Convert.FromHexString("eea6a7251c1e72916d11c2cb214d3c252539121d8e234e652d651fa4c8cff880");
    private const string NaclSha512Of4MiB =
        "2bd8e7db6877539e4f2b295ee415cd378ae214aa3beb3e08e911a5bd4a25e6ac16ca283c79c34c08c99f7bdb560111e8cac1ae65eea08ac384d7a591461ab6e3";

    private static byte[] RandomBytes(int seed, int length)
    {
        var bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }

    /// <summary>Writes <paramref name="data"/> in chunks of varying size, alternating GetSpan/Advance and WriteAsync.</summary>
    private static async Task WriteChunkedAsync(PipeWriter writer, byte[] data, int seed)
    {
        var random = new Random(seed);
        var offset = 0;
        var i = 0;
        while (offset < data.Length)
        {
            var n = Math.Min(data.Length - offset, random.Next(1, 70_000));
            if (i++ % 2 == 0)
            {
                var span = writer.GetSpan(n);
                n = Math.Min(n, span.Length);
                data.AsSpan(offset, n).CopyTo(span);
                writer.Advance(n);
                await writer.FlushAsync();
            }
            else
            {
                await writer.WriteAsync(data.AsMemory(offset, n));
            }
            offset += n;
        }
    }

    [Test]
    public async Task Writer_ZeroPlaintext_IsNonceThenXSalsa20KeystreamOfTheNaclVector()
    {
        var (a, b) = PipePair.Create();
        var protectedA = PnetProtector.Protect(a, SwarmKey.FromBytes(NaclKey), (byte[])NaclNonce.Clone());
        await protectedA.Output.WriteAsync(new byte[32]);

        var wire = PipePair.ReadBuffered(b.Input);
        Assert.That(wire[..24], Is.EqualTo(NaclNonce));
        Assert.That(wire[24..], Is.EqualTo(NaclFirst32));
    }

    [Test]
    public async Task Writer_4MiBOfZeros_HashesToTheNaclStreamVector()
    {
        var (a, b) = PipePair.Create();
        var protectedA = PnetProtector.Protect(a, SwarmKey.FromBytes(NaclKey), (byte[])NaclNonce.Clone());
        await WriteChunkedAsync(protectedA.Output, new byte[4 * 1024 * 1024], seed: 1);

        var wire = PipePair.ReadBuffered(b.Input);
        Assert.That(wire.Length, Is.EqualTo(24 + 4 * 1024 * 1024));
        Assert.That(Convert.ToHexStringLower(SHA512.HashData(wire.AsSpan(24))), Is.EqualTo(NaclSha512Of4MiB));
    }

    [Test]
    public async Task Reader_NonceThenKeystream_DecryptsToZeros()
    {
        var (a, b) = PipePair.Create();
        var protectedB = PnetProtector.Protect(b, SwarmKey.FromBytes(NaclKey));
        await a.Output.WriteAsync(NaclNonce.Concat(NaclFirst32).ToArray());
        Assert.That(await PipePair.ReadExactlyAsync(protectedB.Input, 32), Is.EqualTo(new byte[32]));
    }

    [Test]
    public async Task RoundTrip_SameKey_SeveralMiBInBothDirections()
    {
        var key = SwarmKey.Generate();
        var (a, b) = PipePair.Create();
        var pa = PnetProtector.Protect(a, key);
        var pb = PnetProtector.Protect(b, key);
        var aToB = RandomBytes(1, 3 * 1024 * 1024 + 17);
        var bToA = RandomBytes(2, 2 * 1024 * 1024 + 5);

        await WriteChunkedAsync(pa.Output, aToB, seed: 3);
        await WriteChunkedAsync(pb.Output, bToA, seed: 4);

        Assert.That(await PipePair.ReadExactlyAsync(pb.Input, aToB.Length), Is.EqualTo(aToB));
        Assert.That(await PipePair.ReadExactlyAsync(pa.Input, bToA.Length), Is.EqualTo(bToA));
    }

    [Test]
    public async Task RoundTrip_WithBackpressureAndConcurrentReader_DeliversEverything()
    {
        var key = SwarmKey.Generate();
        var bounded = new PipeOptions(pauseWriterThreshold: 64 * 1024, resumeWriterThreshold: 32 * 1024, useSynchronizationContext: false);
        var (a, b) = PipePair.Create(bounded);
        var pa = PnetProtector.Protect(a, key);
        var pb = PnetProtector.Protect(b, key);
        var data = RandomBytes(5, 4 * 1024 * 1024);

        var reading = Task.Run(() => PipePair.ReadExactlyAsync(pb.Input, data.Length));
        await WriteChunkedAsync(pa.Output, data, seed: 6);
        Assert.That(await reading, Is.EqualTo(data));
    }

    [Test]
    public async Task Reader_PartialConsumption_NeverDecryptsABufferTwice()
    {
        var key = SwarmKey.Generate();
        var (a, b) = PipePair.Create();
        var pa = PnetProtector.Protect(a, key);
        var pb = PnetProtector.Protect(b, key);
        var data = RandomBytes(7, 1000);
        await pa.Output.WriteAsync(data.AsMemory(0, 600));

        var received = new List<byte>();
        while (received.Count < data.Length)
        {
            var result = await pb.Input.ReadAsync();
            // Take one byte and leave the rest: it comes back, already plaintext, along with anything new.
            received.Add(result.Buffer.FirstSpan[0]);
            pb.Input.AdvanceTo(result.Buffer.GetPosition(1));
            if (received.Count == 300)
            {
                await pa.Output.WriteAsync(data.AsMemory(600));
            }
        }
        Assert.That(received.ToArray(), Is.EqualTo(data));
    }

    [Test]
    public async Task RoundTrip_DifferentKeys_DeliversGarbage()
    {
        var (a, b) = PipePair.Create();
        var pa = PnetProtector.Protect(a, SwarmKey.Generate());
        var pb = PnetProtector.Protect(b, SwarmKey.Generate());
        var data = RandomBytes(8, 4096);
        await pa.Output.WriteAsync(data);

        var received = await PipePair.ReadExactlyAsync(pb.Input, data.Length);
        var same = data.Zip(received).Count(p => p.First == p.Second);
        Assert.That(same, Is.LessThan(64), "about 1 in 256 bytes match by chance");
    }

    [Test]
    public async Task DifferentKeys_MultistreamListenerFails_InsteadOfHanging()
    {
        var (a, b) = PipePair.Create();
        var dialer = PnetProtector.Protect(a, SwarmKey.Generate());
        var listener = PnetProtector.Protect(b, SwarmKey.Generate());
        var listening = MultistreamSelect.HandleAsync(listener, ["/noise"], MultistreamOptions.Default, default).AsTask();

        MultistreamMessage.Write(dialer.Output, MultistreamSelect.ProtocolId);
        MultistreamMessage.Write(dialer.Output, "/noise");
        await dialer.Output.FlushAsync();
        await dialer.Output.CompleteAsync();

        Assert.ThrowsAsync<ProtocolViolationException>(async () => await listening);
    }

    [Test]
    public async Task SameKey_MultistreamNegotiatesThroughPnet_AndLeavesFollowingBytes()
    {
        var key = SwarmKey.Generate();
        var (a, b) = PipePair.Create();
        var dialer = PnetProtector.Protect(a, key);
        var listener = PnetProtector.Protect(b, key);
        var listening = MultistreamSelect.HandleAsync(listener, ["/noise"], MultistreamOptions.Default, default).AsTask();

        var lazy = await MultistreamSelect.SelectOneLazyAsync(dialer, "/noise", MultistreamOptions.Default, default);
        await lazy.Output.WriteAsync("noise msg 1"u8.ToArray());

        Assert.That(await listening, Is.EqualTo("/noise"));
        Assert.That(await PipePair.ReadExactlyAsync(listener.Input, 11), Is.EqualTo("noise msg 1"u8.ToArray()));
        await listener.Output.WriteAsync("noise msg 2"u8.ToArray());
        Assert.That(await PipePair.ReadExactlyAsync(lazy.Input, 11), Is.EqualTo("noise msg 2"u8.ToArray()));
    }

    [Test]
    public async Task Reader_OnlyPartOfTheNonce_WaitsAndHandsOutNothing()
    {
        var (a, b) = PipePair.Create();
        var pb = PnetProtector.Protect(b, SwarmKey.Generate());
        await a.Output.WriteAsync(new byte[23]);
        Assert.That(pb.Input.TryRead(out _), Is.False);
        await a.Output.WriteAsync(new byte[1]);
        Assert.That(pb.Input.TryRead(out _), Is.False, "a nonce with no data after it gives the caller nothing yet");
    }

    [Test]
    public async Task Reader_ConnectionEndsInsideTheNonce_IsAViolation()
    {
        var (a, b) = PipePair.Create();
        var pb = PnetProtector.Protect(b, SwarmKey.Generate());
        await a.Output.WriteAsync(new byte[10]);
        await a.Output.CompleteAsync();
        var ex = Assert.ThrowsAsync<ProtocolViolationException>(async () => await pb.Input.ReadAsync());
        Assert.That(ex!.Reason, Does.Contain("10 of the 24"));
    }

    [Test]
    public async Task Reader_PlainMultistreamHeaderWhereTheNonceBelongs_IsAMultistreamViolation_EvenIfTheRemoteHangsUp()
    {
        // A peer without the swarm key opens with multistream-select's header, then the Noise proposal, and may hang up
        // as soon as it reads our (to it) garbage: the listener must still see a swarm-key mismatch, not a peer gone.
        var (a, b) = PipePair.Create();
        var pb = PnetProtector.Protect(b, SwarmKey.Generate());
        await a.Output.WriteAsync("\u0013/multistream/1.0.0\n\u0007/noise\n"u8.ToArray());
        await a.Output.CompleteAsync();
        var ex = Assert.ThrowsAsync<ProtocolViolationException>(async () => await pb.Input.ReadAsync());
        Assert.That(ex!.Protocol, Is.EqualTo("multistream-select"));
        Assert.That(ex.Reason, Does.Contain("no swarm key"));
    }

    [Test]
    public async Task Reader_ConnectionClosedBeforeAnyByte_IsACleanEnd()
    {
        var (a, b) = PipePair.Create();
        var pb = PnetProtector.Protect(b, SwarmKey.Generate());
        await a.Output.CompleteAsync();
        var result = await pb.Input.ReadAsync();
        Assert.That(result.IsCompleted, Is.True);
        Assert.That(result.Buffer.IsEmpty, Is.True);
        pb.Input.AdvanceTo(result.Buffer.End);
    }

    [Test]
    public async Task Complete_OnProtectedEnds_CompletesTheRawPipe()
    {
        var key = SwarmKey.Generate();
        var (a, b) = PipePair.Create();
        var pa = PnetProtector.Protect(a, key);
        var pb = PnetProtector.Protect(b, key);
        await pa.Output.WriteAsync("bye"u8.ToArray());
        await pa.Output.CompleteAsync();

        Assert.That(await PipePair.ReadExactlyAsync(pb.Input, 3), Is.EqualTo("bye"u8.ToArray()));
        var end = await pb.Input.ReadAsync();
        Assert.That(end.IsCompleted, Is.True);
        Assert.That(end.Buffer.IsEmpty, Is.True);
    }

    [Test]
    public async Task Reader_CancelPendingRead_ReturnsCancelledWithoutData()
    {
        var (a, b) = PipePair.Create();
        var pb = PnetProtector.Protect(b, SwarmKey.Generate());
        await a.Output.WriteAsync(new byte[5]);
        var reading = pb.Input.ReadAsync().AsTask();
        pb.Input.CancelPendingRead();
        var result = await reading;
        Assert.That(result.IsCanceled, Is.True);
        Assert.That(result.Buffer.IsEmpty, Is.True);
        pb.Input.AdvanceTo(result.Buffer.Start);
    }
}
