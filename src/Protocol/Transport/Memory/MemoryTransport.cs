using Potluck.Protocol.Multiformats;

namespace Potluck.Protocol.Transport.Memory;

/// <summary>
/// One node's access to a <see cref="SimulatedNetwork"/>: dials and listens on <c>/memory/&lt;u64&gt;</c>
/// (a trailing <c>/p2p/…</c> is ignored). Listening on <c>/memory/0</c> allocates a fresh address.
/// Dialing an address nobody listens on fails with <see cref="TransportError.ConnectionRefused"/>.
/// </summary>
public sealed class MemoryTransport : ITransport, IHolePunchTransport
{
    internal MemoryTransport(SimulatedNetwork network) => Network = network;

    public SimulatedNetwork Network { get; }

    /// <summary>Ids this transport listens on, first one first; guarded by the network's lock.</summary>
    internal List<ulong> ListenIds { get; } = [];

    /// <summary>The id it dials from while it listens nowhere (0 until needed); guarded by the network's lock.</summary>
    internal ulong EphemeralId { get; set; }

    public bool CanHandle(Multiaddr address) => SimulatedNetwork.TryGetId(address, out _);

    public ValueTask<IRawConnection> DialAsync(Multiaddr to, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(to);
        ct.ThrowIfCancellationRequested();
        return ValueTask.FromResult<IRawConnection>(Network.Connect(this, to));
    }

    /// <summary>Every dial already leaves from the first listen address (port reuse), so a hole-punch dial is an ordinary one.</summary>
    public ValueTask<IRawConnection> DialFromListenPortAsync(Multiaddr to, CancellationToken ct) => DialAsync(to, ct);

    public ValueTask<IListener> ListenAsync(Multiaddr at, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(at);
        ct.ThrowIfCancellationRequested();
        return ValueTask.FromResult<IListener>(Network.Listen(this, at));
    }
}
