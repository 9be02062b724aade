using System.Buffers;
using System.IO.Pipelines;
using Microsoft.Extensions.Logging;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Ping;

/// <summary>Settings of <see cref="PingService"/>.</summary>
public sealed record PingOptions
{
    /// <summary>Answer pings from others (register <c>/ipfs/ping/1.0.0</c>). Default true.</summary>
    public bool Serve { get; init; } = true;
}

/// <summary>
/// Ping (<c>/ipfs/ping/1.0.0</c>, https://github.com/libp2p/specs/blob/master/ping/ping.md): the dialer sends
/// 32 random bytes, the listener echoes them, repeatedly on one stream. Round trips are timed with the runtime's
/// clock and folded into the peer store's latency.
/// </summary>
public sealed class PingService
{
    public const string ProtocolId = "/ipfs/ping/1.0.0";
    public const int PayloadSize = 32;

    private readonly IHost _host;
    private readonly NodeRuntime _runtime;

    public PingService(IHost host, PingOptions options, NodeRuntime runtime, ILoggerFactory loggers)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(loggers);
        _host = host;
        _runtime = runtime;
        if (options.Serve)
        {
            host.SetStreamHandler(ProtocolId, HandleAsync);
        }
    }

    private static async Task HandleAsync(IStream stream, CancellationToken ct)
    {
        while (true)
        {
            var result = await stream.Input.ReadAtLeastAsync(PayloadSize, ct);
            var buffer = result.Buffer;
            if (buffer.Length < PayloadSize)
            {
                stream.Input.AdvanceTo(buffer.End);
                await stream.Output.CompleteAsync();
                return; // remote closed: normal end of a ping stream
            }
            var payload = buffer.Slice(0, PayloadSize);
            foreach (var segment in payload)
            {
                stream.Output.Write(segment.Span);
            }
            stream.Input.AdvanceTo(payload.End);
            await stream.Output.FlushAsync(ct);
        }
    }

    /// <summary>Sends <paramref name="count"/> pings over one stream and returns each round-trip time.</summary>
    public async Task<IReadOnlyList<TimeSpan>> PingAsync(PeerId peer, int count, CancellationToken ct)
    {
        await using var stream = await _host.NewStreamAsync(peer, [ProtocolId], ct);
        var rtts = new List<TimeSpan>(count);
        var payload = new byte[PayloadSize];
        for (var i = 0; i < count; i++)
        {
            rtts.Add(await PingOnceAsync(stream, payload, ct));
            _host.Peers.RecordLatency(peer, rtts[^1]);
        }
        await stream.Output.CompleteAsync();
        return rtts;
    }

    private async Task<TimeSpan> PingOnceAsync(IStream stream, byte[] payload, CancellationToken ct)
    {
        _runtime.SecureRandom.Fill(payload);
        var start = _runtime.Time.GetTimestamp();
        await stream.Output.WriteAsync(payload, ct);
        var result = await stream.Input.ReadAtLeastAsync(PayloadSize, ct);
        if (result.Buffer.Length < PayloadSize)
        {
            stream.Input.AdvanceTo(result.Buffer.End);
            throw new ProtocolViolationException(ProtocolId, "stream closed before the ping was echoed", ViolationCode.Malformed);
        }
        var echoed = result.Buffer.Slice(0, PayloadSize);
        var matches = echoed.IsSingleSegment ? echoed.FirstSpan.SequenceEqual(payload) : echoed.ToArray().AsSpan().SequenceEqual(payload);
        stream.Input.AdvanceTo(echoed.End);
        if (!matches)
        {
            throw new ProtocolViolationException(ProtocolId, "the echoed payload differs from what was sent", ViolationCode.InvalidValue);
        }
        return _runtime.Time.GetElapsedTime(start);
    }
}
