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
namespace Potluck.Protocol.Transport.Tcp
{
    public sealed class TcpTransportOptions { }
    public sealed class TcpTransport : ITransport { public TcpTransport(TcpTransportOptions o, Microsoft.Extensions.Logging.ILoggerFactory l) { }
      public bool CanHandle(Potluck.Protocol.Multiformats.Multiaddr a) => true; public ValueTask<IRawConnection> DialAsync(Potluck.Protocol.Multiformats.Multiaddr a, CancellationToken ct) => throw new NotImplementedException(); public ValueTask<IListener> ListenAsync(Potluck.Protocol.Multiformats.Multiaddr a, CancellationToken ct) => throw new NotImplementedException(); }
}
namespace Potluck.Protocol.Host
{
    public sealed class Libp2pHostSettings { public Potluck.Protocol.Pnet.SwarmKey? SwarmKey { get; set; } }
    public sealed partial class Libp2pHost { public static Libp2pHost Create(Potluck.Protocol.Identity.PrivateKey k, IReadOnlyList<Potluck.Protocol.Transport.ITransport> t, Libp2pHostSettings s, Microsoft.Extensions.Logging.ILoggerFactory l, TimeProvider time) => throw new NotImplementedException(); }
}
