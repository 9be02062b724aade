using System.Buffers;
using System.Buffers.Binary;
using System.IO.Pipelines;
using Microsoft.Extensions.Logging;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Perf;

/// <summary>Limits of the perf server.</summary>
public sealed record PerfOptions
{
    /// <summary>Serve <c>/perf/1.0.0</c> at all. Default true.</summary>
    public bool Serve { get; init; } = true;

    /// <summary>Largest download a client may ask for, so perf is no amplification tool. Default 16 GiB.</summary>
    public ulong MaxDownloadBytes { get; init; } = 16UL << 30;
}

/// <summary>One perf run's measured durations.</summary>
public sealed record PerfResult(long UploadBytes, long DownloadBytes, TimeSpan Elapsed)
{
    public double BitsPerSecond => (UploadBytes + DownloadBytes) * 8 / Math.Max(Elapsed.TotalSeconds, 1e-9);
}

/// <summary>
/// Perf (<c>/perf/1.0.0</c>, https://github.com/libp2p/specs/blob/master/perf/perf.md): the client writes an
/// 8-byte big-endian count of bytes it wants back, then uploads, then half-closes; the server drains the upload
/// and sends the requested bytes. As in the spec's harness, upload and download are measured in separate runs.
/// </summary>
public sealed class PerfService
{
    public const string ProtocolId = "/perf/1.0.0";
    private const int ChunkSize = 64 * 1024;
    private const int FlushEvery = 256 * 1024;

    private readonly IHost _host;
    private readonly PerfOptions _options;
    private readonly NodeRuntime _runtime;

    public PerfService(IHost host, PerfOptions options, NodeRuntime runtime, ILoggerFactory loggers)
    {
        ArgumentNullException.ThrowIfNull(loggers);
        _host = host;
        _options = options;
        _runtime = runtime;
        if (options.Serve)
        {
            host.SetStreamHandler(ProtocolId, HandleAsync);
        }
    }

    private async Task HandleAsync(IStream stream, CancellationToken ct)
    {
        var header = await stream.Input.ReadAtLeastAsync(8, ct);
        if (header.Buffer.Length < 8)
        {
            stream.Input.AdvanceTo(header.Buffer.End);
            throw new ProtocolViolationException(ProtocolId, "stream ended before the 8-byte size", ViolationCode.Malformed);
        }
        Span<byte> size = stackalloc byte[8];
        header.Buffer.Slice(0, 8).CopyTo(size);
        stream.Input.AdvanceTo(header.Buffer.GetPosition(8));
        var toSend = BinaryPrimitives.ReadUInt64BigEndian(size);
        if (toSend > _options.MaxDownloadBytes)
        {
            throw new ProtocolViolationException(ProtocolId, $"asked for {toSend} bytes, over the {_options.MaxDownloadBytes}-byte limit", ViolationCode.TooLarge);
        }
        await DrainAsync(stream.Input, ct);
        await SendAsync(stream.Output, (long)toSend, ct);
        await stream.Output.CompleteAsync();
    }

    /// <summary>Runs one perf exchange against <paramref name="peer"/>.</summary>
    public async Task<PerfResult> RunAsync(PeerId peer, long upload, long download, CancellationToken ct)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(upload);
        ArgumentOutOfRangeException.ThrowIfNegative(download);
        var connection = await _host.ConnectAsync(peer, ct);
        var start = _runtime.Time.GetTimestamp();
        await using var stream = await connection.OpenStreamAsync([ProtocolId], ct);
        var header = new byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(header, (ulong)download);
        stream.Output.Write(header);
        await SendAsync(stream.Output, upload, ct);
        await stream.Output.CompleteAsync();
        var received = await DrainAsync(stream.Input, ct);
        var elapsed = _runtime.Time.GetElapsedTime(start);
        if (received != download)
        {
            throw new ProtocolViolationException(ProtocolId, $"expected {download} bytes, received {received}", ViolationCode.InvalidValue);
        }
        return new PerfResult(upload, download, elapsed);
    }

    private static async ValueTask SendAsync(PipeWriter output, long count, CancellationToken ct)
    {
        var sinceFlush = 0;
        while (count > 0)
        {
            var span = output.GetSpan(ChunkSize);
            var n = (int)Math.Min(span.Length, count);
            span[..n].Clear();
            output.Advance(n);
            count -= n;
            sinceFlush += n;
            if (sinceFlush >= FlushEvery || count == 0)
            {
                sinceFlush = 0;
                var flush = await output.FlushAsync(ct);
                if (flush.IsCompleted)
                {
                    throw new PeerGoneException("the remote stopped reading");
                }
            }
        }
    }

    private static async ValueTask<long> DrainAsync(PipeReader input, CancellationToken ct)
    {
        long total = 0;
        while (true)
        {
            var result = await input.ReadAsync(ct);
            total += result.Buffer.Length;
            input.AdvanceTo(result.Buffer.End);
            if (result.IsCompleted)
            {
                return total;
            }
        }
    }
}
