using System.IO.Pipelines;
namespace Potluck.Protocol.Multistream
{
    public sealed class MultistreamOptions { }
    public static class MultistreamSelect
    {
        public static ValueTask<string> SelectAsync(IDuplexPipe pipe, IReadOnlyList<string> protocols, MultistreamOptions options, CancellationToken ct) => throw new NotImplementedException();
        public static ValueTask<string> HandleAsync(IDuplexPipe pipe, Func<string, bool> isSupported, MultistreamOptions options, CancellationToken ct) => throw new NotImplementedException();
    }
}
namespace Potluck.Protocol.Pnet
{
    public sealed class SwarmKey { public string Fingerprint => ""; public static bool TryParse(string s, out SwarmKey k, out string e) => throw new NotImplementedException(); public static SwarmKey Generate() => new(); public string ToFileText() => ""; }
    public static class PnetProtector
    {
        public static ValueTask<IDuplexPipe> ProtectAsync(IDuplexPipe raw, SwarmKey key, CancellationToken ct) => throw new NotImplementedException();
    }
}

namespace Potluck.Protocol.Yamux
{
    public sealed class YamuxOptions { }
    public sealed class YamuxMuxer : Potluck.Protocol.Muxing.IStreamMuxer { public const string ProtocolId = "/yamux/1.0.0"; public YamuxMuxer(YamuxOptions o, Microsoft.Extensions.Logging.ILoggerFactory l, TimeProvider t) { } public string ProtocolId2 => ""; string Potluck.Protocol.Muxing.IStreamMuxer.ProtocolId => ProtocolId; public Potluck.Protocol.Muxing.IMuxedConnection Create(IDuplexPipe p, bool i) => throw new NotImplementedException(); }
}
