using Microsoft.Extensions.Logging.Abstractions;
using Potluck.Protocol.Muxing;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Tests.Muxing;
using Potluck.Protocol.Yamux;

namespace Potluck.Protocol.Tests.Yamux;

/// <summary>The muxer conformance suite run against yamux over every transport in <see cref="PipePairFactories"/>.</summary>
[TestFixtureSource(typeof(PipePairFactories), nameof(PipePairFactories.All))]
public sealed class YamuxConformanceTests(IPipePairFactory pipes) : MuxerConformanceTests(pipes)
{
    private static readonly YamuxOptions Defaults = new() { MaxStreamWindow = 1024 * 1024 };

    protected override long MuxerBufferedBytesPerStream =>
        Defaults.MaxStreamWindow + Defaults.StreamSendBuffer + Defaults.MaxFramePayload;

    protected override IStreamMuxer CreateMuxer(int maxStreams) => new YamuxMuxer(
        new YamuxOptions
        {
            MaxStreamWindow = Defaults.MaxStreamWindow,
            MaxInboundStreams = maxStreams,
            MaxOutboundStreams = maxStreams,
        },
        NodeRuntime.System,
        NullLoggerFactory.Instance);
}
