using System.IO.Pipelines;
using Potluck.Protocol.Multiformats;

namespace Potluck.Protocol.Transport;

/// <summary>
/// A way of reaching peers: TCP sockets, or the in-memory simulated network. The upgrader
/// (pnet → multistream → Noise → multistream → Yamux) runs on top of either, unchanged.
/// </summary>
public interface ITransport
{
    /// <summary>True when this transport can dial or listen on <paramref name="address"/>.</summary>
    bool CanHandle(Multiaddr address);

    ValueTask<IRawConnection> DialAsync(Multiaddr to, CancellationToken ct);

    ValueTask<IListener> ListenAsync(Multiaddr at, CancellationToken ct);
}

/// <summary>A byte-stream connection before any upgrade. Disposing it closes both directions.</summary>
public interface IRawConnection : IDuplexPipe, IAsyncDisposable
{
    Multiaddr Local { get; }

    Multiaddr Remote { get; }
}

/// <summary>Accepts inbound raw connections on one address.</summary>
public interface IListener : IAsyncDisposable
{
    /// <summary>The bound address (with the real port when port 0 was asked for).</summary>
    Multiaddr Address { get; }

    /// <summary>The next inbound connection; throws <see cref="OperationCanceledException"/> once disposed or cancelled.</summary>
    ValueTask<IRawConnection> AcceptAsync(CancellationToken ct);
}

/// <summary>
/// A transport that can take part in a hole punch (DCUtR): its dial leaves from the address it listens on, so it goes
/// out through the NAT mapping that peers observed for that address and meets the peer's simultaneous dial.
/// </summary>
public interface IHolePunchTransport
{
    ValueTask<IRawConnection> DialFromListenPortAsync(Multiaddr to, CancellationToken ct);
}
