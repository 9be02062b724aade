using Microsoft.Extensions.Logging;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Metrics;
using Potluck.Protocol.Multistream;
using Potluck.Protocol.Noise;
using Potluck.Protocol.Pnet;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Transport;
using Potluck.Protocol.Yamux;

namespace Potluck.Protocol.Host;

/// <summary>Everything a host's stack can be tuned with; the defaults are what `potluck run` uses.</summary>
public sealed record Libp2pHostSettings
{
    public HostOptions Host { get; init; } = new();

    /// <summary>Noise settings. By default Yamux is offered inside the handshake (the Noise <c>stream_muxers</c>
    /// extension), which saves the round trip of negotiating the muxer with peers that offer it too.</summary>
    public NoiseOptions Noise { get; init; } = new() { EarlyMuxers = [YamuxMuxer.ProtocolId] };

    public YamuxOptions Yamux { get; init; } = new();

    public MultistreamOptions Multistream { get; init; } = new();

    /// <summary>When set, the host only talks to peers with the same pre-shared key (libp2p pnet).</summary>
    public SwarmKey? SwarmKey { get; init; }

    /// <summary>
    /// Replaces Noise with another security protocol, made from the host's key (null: Noise). Only simulations use
    /// it, for <see cref="Security.PlaintextSimSecurity"/>; no muxer is then offered inside the handshake.
    /// </summary>
    public Func<PrivateKey, Security.ISecurityProtocol>? Security { get; init; }
}

public sealed partial class Libp2pHost
{
    /// <summary>
    /// A host with the standard stack: (pnet) → multistream-select → Noise → multistream-select → Yamux,
    /// on the given transports and runtime, counting into <paramref name="instruments"/> (the node's; a host built
    /// without them counts into instruments of its own that no node's meter factory knows).
    /// </summary>
    public static Libp2pHost Create(PrivateKey key, IReadOnlyList<ITransport> transports, Libp2pHostSettings settings,
        NodeRuntime runtime, ILoggerFactory loggers, ProtocolInstruments? instruments = null)
    {
        instruments ??= ProtocolInstruments.Detached();
        var resources = new ResourceManager(settings.Host, runtime.Time);
        var security = settings.Security?.Invoke(key) ?? new NoiseSecurity(key, settings.Noise, runtime, loggers, instruments);
        return new(key, settings.Host, transports, security,
            new YamuxMuxer(settings.Yamux, runtime, loggers, resources.Memory), settings.SwarmKey, settings.Multistream, runtime, loggers,
            settings.Security is null ? settings.Noise.EarlyMuxers : [], resources, instruments);
    }
}
