using System.Buffers;
using System.IO.Pipelines;
using System.Security.Cryptography;
using Potluck.Protocol.Muxing;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Tests.Muxing;

/// <summary>
/// Behaviour every <see cref="IStreamMuxer"/> must have, written once (as go-libp2p's muxer testsuite) and run
/// per muxer and per transport: derive a fixture per muxer and feed it each <see cref="IPipePairFactory"/>.
/// Waits are on events only; <see cref="Guard"/> merely turns a hang into a failure.
/// </summary>
public abstract class MuxerConformanceTests(IPipePairFactory pipes)
{
    private static readonly TimeSpan HangGuard = TimeSpan.FromSeconds(60);
    private readonly List<IAsyncDisposable> _cleanup = [];

    /// <summary>The muxer under test; <paramref name="maxStreams"/> caps concurrent streams each way.</summary>
    protected abstract IStreamMuxer CreateMuxer(int maxStreams);

    /// <summary>Bytes a stream writer can get ahead of a reader that does not read (window plus the muxer's buffers).</summary>
    protected abstract long MuxerBufferedBytesPerStream { get; }

    protected IPipePairFactory Pipes => pipes;

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
    public async Task OpenAndAccept_BothDirections_CarryBytes()
    {
        var (client, server) = await ConnectAsync();

        var outbound = await client.OpenStreamAsync(default);
        await WriteAsync(outbound, "from client"u8.ToArray());
        var inbound = await Guard(server.AcceptStreamAsync(default).AsTask());
        Assert.That(await ReadExactlyAsync(inbound, 11), Is.EqualTo("from client"u8.ToArray()));

        var serverOpened = await server.OpenStreamAsync(default);
        await WriteAsync(serverOpened, "from server"u8.ToArray());
        var clientAccepted = await Guard(client.AcceptStreamAsync(default).AsTask());
        Assert.That(await ReadExactlyAsync(clientAccepted, 11), Is.EqualTo("from server"u8.ToArray()));
        Assert.That(serverOpened.Id, Is.Not.EqualTo(outbound.Id));
        Assert.That(client.StreamCount, Is.EqualTo(2));
    }

    [Test]
    public async Task Echo_10MiB_ArrivesIntactAndInOrder()
    {
        var (client, server) = await ConnectAsync();
        var echo = EchoServerAsync(server, 1);
        var payload = RandomBytes(10 * 1024 * 1024, seed: 1);

        var stream = await client.OpenStreamAsync(default);
        var received = await Guard(SendAndReceiveAllAsync(stream, payload, chunk: 64 * 1024));

        Assert.That(SHA256.HashData(received), Is.EqualTo(SHA256.HashData(payload)));
        Assert.That(received, Has.Length.EqualTo(payload.Length));
        await Guard(echo);
    }

    [Test]
    public async Task HundredConcurrentStreams_EachEchoesItsOwnBytes()
    {
        var (client, server) = await ConnectAsync();
        const int count = 100;
        var echo = EchoServerAsync(server, count);

        var tasks = Enumerable.Range(0, count).Select(async i =>
        {
            var payload = RandomBytes(32 * 1024 + i, seed: 100 + i);
            var stream = await client.OpenStreamAsync(default);
            var received = await SendAndReceiveAllAsync(stream, payload, chunk: 4096);
            return received.AsSpan().SequenceEqual(payload);
        }).ToList();

        var results = await Guard(Task.WhenAll(tasks));
        Assert.That(results, Is.All.True);
        await Guard(echo);
        Assert.That(client.StreamCount, Is.Zero, "every stream was closed both ways");
        Assert.That(server.StreamCount, Is.Zero);
    }

    [Test]
    public async Task HalfClose_RemoteReadsToEndAndCanStillReply()
    {
        var (client, server) = await ConnectAsync();
        var stream = await client.OpenStreamAsync(default);
        await WriteAsync(stream, "request"u8.ToArray());
        await stream.Output.CompleteAsync();

        var inbound = await Guard(server.AcceptStreamAsync(default).AsTask());
        var request = await Guard(ReadToEndAsync(inbound));
        Assert.That(request, Is.EqualTo("request"u8.ToArray()), "the FIN ends the remote's input after the data");

        await WriteAsync(inbound, "response"u8.ToArray());
        await inbound.Output.CompleteAsync();
        var response = await Guard(ReadToEndAsync(stream));
        Assert.That(response, Is.EqualTo("response"u8.ToArray()), "a half-closed stream still reads");
    }

    [Test]
    public async Task Reset_FailsReadsOnBothSidesWithStreamResetException()
    {
        var (client, server) = await ConnectAsync();
        var stream = await client.OpenStreamAsync(default);
        await WriteAsync(stream, "x"u8.ToArray());
        var inbound = await Guard(server.AcceptStreamAsync(default).AsTask());
        Assert.That(await ReadExactlyAsync(inbound, 1), Is.EqualTo("x"u8.ToArray()));

        stream.Reset();

        Assert.ThrowsAsync<StreamResetException>(async () => await Guard(ReadToEndAsync(inbound)));
        Assert.ThrowsAsync<StreamResetException>(async () => await stream.Input.ReadAsync());
        Assert.ThrowsAsync<StreamResetException>(async () =>
        {
            // The remote's writer learns too: a flush throws, or reports the stream completed.
            while (true)
            {
                await inbound.Output.WriteAsync(new byte[1024]);
                var flush = await Guard(inbound.Output.FlushAsync().AsTask());
                if (flush.IsCompleted)
                {
                    throw new StreamResetException("completed");
                }
            }
        });
    }

    [Test]
    public async Task Backpressure_WriterToAStalledReaderStallsAndStaysBounded()
    {
        var (client, server) = await ConnectAsync();
        var stream = await client.OpenStreamAsync(default);
        await WriteAsync(stream, "hi"u8.ToArray());
        var inbound = await Guard(server.AcceptStreamAsync(default).AsTask());

        const int chunk = 16 * 1024;
        var bound = MuxerBufferedBytesPerStream + pipes.TransportBufferBytes + chunk;
        var total = 4 * bound;
        long written = 2;
        long consumed = 0;
        long maxAhead = 0;
        var stalls = 0;
        var blocked = 0;
        var writerDone = 0;
        var wake = new SemaphoreSlim(0);

        var writer = Task.Run(async () =>
        {
            try
            {
                var data = new byte[chunk];
                while (written < total)
                {
                    var ahead = written - Volatile.Read(ref consumed);
                    maxAhead = Math.Max(maxAhead, ahead);
                    if (ahead > bound)
                    {
                        throw new AssertionException($"the writer ran {ahead} bytes ahead of its reader (bound {bound}, written {written}, consumed {Volatile.Read(ref consumed)}, stalls {stalls})");
                    }

                    stream.Output.Write(data);
                    var flush = stream.Output.FlushAsync();
                    if (!flush.IsCompleted)
                    {
                        stalls++;
                        Volatile.Write(ref blocked, 1);
                        wake.Release();
                    }

                    await flush;
                    Volatile.Write(ref blocked, 0);
                    written += chunk;
                }

                await stream.Output.CompleteAsync();
            }
            finally
            {
                Volatile.Write(ref writerDone, 1);
                wake.Release();
            }
        });

        // The reader only reads while the writer reports it is blocked (or finished): a writer that is
        // not held back by flow control runs past the bound and fails.
        long readTotal = 0;
        while (true)
        {
            while (Volatile.Read(ref blocked) == 0 && Volatile.Read(ref writerDone) == 0)
            {
                await Guard(wake.WaitAsync());
            }

            if (writer.IsFaulted)
            {
                await writer;
            }

            var result = await Guard(inbound.Input.ReadAsync().AsTask());
            var length = result.Buffer.Length;
            inbound.Input.AdvanceTo(result.Buffer.End);
            readTotal += length;
            Interlocked.Add(ref consumed, length);
            if (result.IsCompleted)
            {
                break;
            }
        }

        await Guard(writer);
        Assert.That(readTotal, Is.EqualTo(written));
        Assert.That(stalls, Is.GreaterThan(0), "the writer was held back by flow control");
        Assert.That(maxAhead, Is.LessThanOrEqualTo(bound));
    }

    [Test]
    public async Task StreamCap_OpeningPastItThrows_UntilAStreamCloses()
    {
        var pair = await pipes.CreateAsync();
        _cleanup.Add(pair);
        var client = Track(CreateMuxer(maxStreams: 3).Create(pair.Client, initiator: true));
        Track(CreateMuxer(maxStreams: 1000).Create(pair.Server, initiator: false));

        var streams = new List<IMuxedStream>();
        for (var i = 0; i < 3; i++)
        {
            streams.Add(await client.OpenStreamAsync(default));
        }

        Assert.ThrowsAsync(Is.InstanceOf<ResourceLimitException>(), async () => await client.OpenStreamAsync(default));
        Assert.That(client.StreamCount, Is.EqualTo(3));

        streams[0].Reset();
        var again = await client.OpenStreamAsync(default);
        Assert.That(again.Id, Is.Not.EqualTo(streams[0].Id));
    }

    [Test]
    public async Task StreamCap_InboundPastItIsRefusedWithAReset()
    {
        var pair = await pipes.CreateAsync();
        _cleanup.Add(pair);
        var client = Track(CreateMuxer(maxStreams: 1000).Create(pair.Client, initiator: true));
        var server = Track(CreateMuxer(maxStreams: 2).Create(pair.Server, initiator: false));

        var streams = new List<IMuxedStream>();
        for (var i = 0; i < 3; i++)
        {
            streams.Add(await client.OpenStreamAsync(default));
        }

        // The server allows two: the third is refused and its reader sees a reset. The third's write may itself meet the
        // reset (thrown, or the write answered as completed) when the server's refusal of its opening comes back first,
        // a race on a loaded machine: that is the refusal too, and its reader must still see it below.
        await WriteAsync(streams[0], "x"u8.ToArray());
        await WriteAsync(streams[1], "x"u8.ToArray());
        try
        {
            await Guard(streams[2].Output.WriteAsync("x"u8.ToArray()).AsTask());
        }
        catch (StreamResetException)
        {
        }

        Assert.ThrowsAsync<StreamResetException>(async () => await Guard(ReadToEndAsync(streams[2])));
        var first = await Guard(server.AcceptStreamAsync(default).AsTask());
        var second = await Guard(server.AcceptStreamAsync(default).AsTask());
        Assert.That(await ReadExactlyAsync(first, 1), Is.EqualTo("x"u8.ToArray()));
        Assert.That(await ReadExactlyAsync(second, 1), Is.EqualTo("x"u8.ToArray()));
        Assert.That(server.StreamCount, Is.EqualTo(2));
    }

    [Test]
    public async Task GoAway_ExistingStreamsFinish_NewOnesAreRefused()
    {
        var (client, server) = await ConnectAsync();
        var before = await client.OpenStreamAsync(default);
        await WriteAsync(before, "a"u8.ToArray());
        var inbound = await Guard(server.AcceptStreamAsync(default).AsTask());
        Assert.That(await ReadExactlyAsync(inbound, 1), Is.EqualTo("a"u8.ToArray()));

        await server.GoAwayAsync(default);

        // The existing stream still works both ways.
        await WriteAsync(inbound, "b"u8.ToArray());
        Assert.That(await ReadExactlyAsync(before, 1), Is.EqualTo("b"u8.ToArray()));

        // A new stream is refused: either opening throws or the remote resets it.
        Assert.That(async () =>
        {
            var after = await client.OpenStreamAsync(default);
            await WriteAsync(after, "c"u8.ToArray());
            await Guard(ReadToEndAsync(after));
        }, Throws.InstanceOf<IOException>());
    }

    [Test]
    public async Task Dispose_FailsRemoteStreamsAndCompletes_AndIsIdempotent()
    {
        var (client, server) = await ConnectAsync();
        var stream = await client.OpenStreamAsync(default);
        await WriteAsync(stream, "a"u8.ToArray());
        var inbound = await Guard(server.AcceptStreamAsync(default).AsTask());
        Assert.That(await ReadExactlyAsync(inbound, 1), Is.EqualTo("a"u8.ToArray()));

        await Guard(client.DisposeAsync().AsTask());
        await Guard(client.DisposeAsync().AsTask());

        Assert.That(client.Completion.IsCompleted, Is.True);
        await Guard(server.Completion.ContinueWith(_ => { }));
        Assert.ThrowsAsync(Is.InstanceOf<IOException>(), async () => await Guard(ReadToEndAsync(inbound)));
        Assert.ThrowsAsync(Is.InstanceOf<IOException>(), async () => await stream.Input.ReadAsync());
        Assert.ThrowsAsync(Is.InstanceOf<Exception>(), async () => await client.OpenStreamAsync(default));
        Assert.ThrowsAsync(Is.InstanceOf<IOException>().Or.InstanceOf<OperationCanceledException>(),
            async () => await Guard(server.AcceptStreamAsync(default).AsTask()));
    }

    [Test]
    public async Task UnderlyingPipeClosed_FailsStreamsAndCompletesConnection()
    {
        // Only the server runs a muxer; the test holds the other end of the transport and then closes it.
        var pair = await pipes.CreateAsync();
        _cleanup.Add(pair);
        var server = Track(CreateMuxer(1000).Create(pair.Server, initiator: false));
        var stream = await server.OpenStreamAsync(default);
        await WriteAsync(stream, "a"u8.ToArray());

        await pair.Client.Output.CompleteAsync();

        await Guard(server.Completion.ContinueWith(_ => { }));
        Assert.ThrowsAsync(Is.InstanceOf<IOException>(), async () => await Guard(ReadToEndAsync(stream)));
        Assert.ThrowsAsync(Is.InstanceOf<IOException>().Or.InstanceOf<OperationCanceledException>(),
            async () => await Guard(server.AcceptStreamAsync(default).AsTask()));
        await pair.Client.Input.CompleteAsync();
    }

    protected async Task<(IMuxedConnection Client, IMuxedConnection Server)> ConnectAsync()
    {
        var pair = await pipes.CreateAsync();
        _cleanup.Add(pair);
        var client = Track(CreateMuxer(1000).Create(pair.Client, initiator: true));
        var server = Track(CreateMuxer(1000).Create(pair.Server, initiator: false));
        return (client, server);
    }

    protected T Track<T>(T item)
        where T : IAsyncDisposable
    {
        _cleanup.Add(item);
        return item;
    }

    protected static Task Guard(Task task) => task.WaitAsync(HangGuard);

    protected static Task<T> Guard<T>(Task<T> task) => task.WaitAsync(HangGuard);

    protected static byte[] RandomBytes(int length, int seed)
    {
        var bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }

    protected static async Task WriteAsync(IMuxedStream stream, byte[] data)
    {
        var result = await Guard(stream.Output.WriteAsync(data).AsTask());
        Assert.That(result.IsCompleted, Is.False, "the stream accepted the write");
    }

    protected static async Task<byte[]> ReadExactlyAsync(IMuxedStream stream, int count)
    {
        while (true)
        {
            var result = await Guard(stream.Input.ReadAsync().AsTask());
            if (result.Buffer.Length >= count)
            {
                var bytes = result.Buffer.Slice(0, count).ToArray();
                stream.Input.AdvanceTo(result.Buffer.GetPosition(count));
                return bytes;
            }

            if (result.IsCompleted)
            {
                throw new EndOfStreamException($"wanted {count} bytes, the stream ended after {result.Buffer.Length}");
            }

            stream.Input.AdvanceTo(result.Buffer.Start, result.Buffer.End);
        }
    }

    protected static async Task<byte[]> ReadToEndAsync(IMuxedStream stream)
    {
        var output = new ArrayBufferWriter<byte>();
        while (true)
        {
            var result = await stream.Input.ReadAsync();
            foreach (var segment in result.Buffer)
            {
                output.Write(segment.Span);
            }

            stream.Input.AdvanceTo(result.Buffer.End);
            if (result.IsCompleted)
            {
                return output.WrittenSpan.ToArray();
            }
        }
    }

    /// <summary>Writes <paramref name="payload"/> then FIN while reading everything the remote sends back.</summary>
    protected static async Task<byte[]> SendAndReceiveAllAsync(IMuxedStream stream, byte[] payload, int chunk)
    {
        var send = Task.Run(async () =>
        {
            for (var offset = 0; offset < payload.Length; offset += chunk)
            {
                var size = Math.Min(chunk, payload.Length - offset);
                await stream.Output.WriteAsync(payload.AsMemory(offset, size));
            }

            await stream.Output.CompleteAsync();
        });
        var received = await ReadToEndAsync(stream);
        await send;
        return received;
    }

    /// <summary>Accepts <paramref name="count"/> streams and echoes each until its FIN, then FINs back.</summary>
    protected static Task EchoServerAsync(IMuxedConnection server, int count) => Task.Run(async () =>
    {
        var echoes = new List<Task>();
        for (var i = 0; i < count; i++)
        {
            var stream = await server.AcceptStreamAsync(default);
            echoes.Add(Task.Run(() => EchoAsync(stream)));
        }

        await Task.WhenAll(echoes);
    });

    private static async Task EchoAsync(IMuxedStream stream)
    {
        while (true)
        {
            var result = await stream.Input.ReadAsync();
            foreach (var segment in result.Buffer)
            {
                stream.Output.Write(segment.Span);
            }

            stream.Input.AdvanceTo(result.Buffer.End);
            await stream.Output.FlushAsync();
            if (result.IsCompleted)
            {
                break;
            }
        }

        await stream.Output.CompleteAsync();
        await stream.DisposeAsync();
    }
}
