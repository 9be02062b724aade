using System.IO.Pipelines;

namespace Potluck.Protocol.Yamux
{
    public sealed class YamuxOptions { }
    public sealed class YamuxMuxer : Potluck.Protocol.Muxing.IStreamMuxer { public const string ProtocolId = "/yamux/1.0.0"; public YamuxMuxer(YamuxOptions o, Microsoft.Extensions.Logging.ILoggerFactory l, TimeProvider t) { } public string ProtocolId2 => ""; string Potluck.Protocol.Muxing.IStreamMuxer.ProtocolId => ProtocolId; public Potluck.Protocol.Muxing.IMuxedConnection Create(IDuplexPipe p, bool i) => throw new NotImplementedException(); }
}
