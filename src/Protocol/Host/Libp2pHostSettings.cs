using Microsoft.Extensions.Logging;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multistream;
using Potluck.Protocol.Noise;
using Potluck.Protocol.Pnet;
using Potluck.Protocol.Transport;
using Potluck.Protocol.Yamux;

namespace Potluck.Protocol.Host;

/// <summary>Everything a host's stack can be tuned with; the defaults are what `potluck run` uses.</summary>
public sealed class Libp2pHostSettings
{
    public HostOptions Host { get; set; } = new();

    public NoiseOptions Noise { get; set; } = new();

    public YamuxOptions Yamux { get; set; } = new();

    public MultistreamOptions Multistream { get; set; } = new();

    /// <summary>When set, the host only talks to peers with the same pre-shared key (libp2p pnet).</summary>
    public SwarmKey? SwarmKey { get; set; }
}

public sealed partial class Libp2pHost
{
    /// <summary>
    /// A host with the standard stack: (pnet) → multistream-select → Noise → multistream-select → Yamux,
    /// on the given transports and clock.
    /// </summary>
    public static Libp2pHost Create(PrivateKey key, IReadOnlyList<ITransport> transports, Libp2pHostSettings settings,
        ILoggerFactory loggers, TimeProvider time) =>
        new(key, settings.Host, transports, new NoiseSecurity(key, settings.Noise, loggers),
            new YamuxMuxer(settings.Yamux, loggers, time), settings.SwarmKey, settings.Multistream, loggers, time);
}
