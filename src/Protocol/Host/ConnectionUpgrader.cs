using System.IO.Pipelines;
using Microsoft.Extensions.Logging;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Metrics;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Multistream;
using Potluck.Protocol.Muxing;
using Potluck.Protocol.Pnet;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Security;
using Potluck.Protocol.Transport;

namespace Potluck.Protocol.Host;

/// <summary>
/// Upgrades a raw connection the same way on every transport, as in
/// https://github.com/libp2p/specs/blob/master/connections/README.md: pnet when a swarm key is set → multistream-select
/// → security → multistream-select → muxer. Two round trips are saved on the wire, and must stay saved (js-libp2p and
/// go-libp2p rely on neither, but both accept them): the dialer selects the security protocol lazily (its proposal
/// leaves with the first Noise message, the listener's echo with the second), and when both sides offered muxers inside
/// the Noise handshake (the <c>stream_muxers</c> extension) the muxer is agreed there with no multistream round.
/// Stateless apart from its parts: one per host, used by every dial and every inbound connection at once.
/// </summary>
internal sealed class ConnectionUpgrader
{
    private readonly ISecurityProtocol _security;
    private readonly IStreamMuxer _muxer;
    private readonly SwarmKey? _swarmKey;
    private readonly MultistreamOptions _multistream;
    private readonly IReadOnlyList<string> _earlyMuxers;
    private readonly NodeRuntime _runtime;
    private readonly ILogger _log;
    private readonly ProtocolInstruments _instruments;
    private readonly Func<PeerId, Multiaddr, IMemoryScope>? _memoryFor;

    /// <param name="memoryFor">The memory scope of a connection to a peer at an address (the resource manager's); null: the muxer's own.</param>
    public ConnectionUpgrader(ISecurityProtocol security, IStreamMuxer muxer, SwarmKey? swarmKey, MultistreamOptions multistream,
        IReadOnlyList<string> earlyMuxers, NodeRuntime runtime, ILogger log, ProtocolInstruments? instruments = null,
        Func<PeerId, Multiaddr, IMemoryScope>? memoryFor = null)
    {
        _memoryFor = memoryFor;
        _instruments = instruments ?? ProtocolInstruments.Detached();
        _security = security;
        _muxer = muxer;
        _swarmKey = swarmKey;
        _multistream = multistream;
        _earlyMuxers = earlyMuxers;
        _runtime = runtime;
        _log = log;
    }

    /// <summary>Whether a swarm key guards the connections (failed handshakes then mention it).</summary>
    public bool IsPrivateNetwork => _swarmKey is not null;

    /// <summary>
    /// Runs the upgrade over <paramref name="raw"/>, which the returned connection owns from then on (on failure the
    /// caller still owns and disposes it). With <paramref name="expected"/> set, a remote that proves another identity
    /// fails the handshake (a <see cref="ProtocolViolationException"/> with <see cref="ViolationCode.WrongPeer"/>).
    /// <paramref name="initiator"/> overrides the role the direction gives: in a hole punch both ends dial, and one
    /// connection may result (TCP simultaneous open) that both see as outbound, so the DCUtR roles decide who speaks
    /// first (the peer that opened the DCUtR stream is the initiator, as go-libp2p's simultaneous-connect dials do).
    /// </summary>
    public async Task<Connection> UpgradeAsync(IRawConnection raw, Direction direction, PeerId? expected, long id, CancellationToken ct,
        bool? initiator = null)
    {
        return await UpgradeCoreAsync(raw, direction, expected, id, initiator ?? direction == Direction.Outbound, ct);
    }

    private async Task<Connection> UpgradeCoreAsync(IRawConnection raw, Direction direction, PeerId? expected, long id, bool initiator, CancellationToken ct)
    {
        IDuplexPipe pipe = raw;
        if (_swarmKey is not null)
        {
            pipe = PnetProtector.Protect(raw, _swarmKey, _runtime.SecureRandom);
        }
        // The security protocol is selected lazily: the dialer's proposal leaves with the first Noise message and the
        // listener's echo with the second, so the upgrade takes three flights instead of five.
        if (initiator)
        {
            pipe = MultistreamSelect.SelectOneLazy(pipe, _security.ProtocolId, _multistream);
        }
        else
        {
            await MultistreamSelect.HandleDeferringEchoAsync(pipe, p => p == _security.ProtocolId, _multistream, ct);
        }
        var secure = await _security.SecureAsync(pipe, initiator, expected, ct);
        // The muxer's loops start below: when the dial named no peer, give them the one the handshake proved.
        using var scope = expected is null ? _log.PeerScope(secure.RemotePeer) : null;
        var upgraded = false;
        try
        {
            if (!AgreedEarly(secure, initiator))
            {
                await NegotiateAsync(secure, _muxer.ProtocolId, initiator, ct);
            }
            // Its windows count against the peer's, the address's and the subnet's shares of the node's memory.
            var muxed = _memoryFor is null ? _muxer.Create(secure, initiator) : _muxer.Create(secure, initiator, _memoryFor(secure.RemotePeer, raw.Remote));
            upgraded = true;
            return new Connection(id, raw, secure, muxed, direction, _multistream, _runtime.Time, _instruments);
        }
        finally
        {
            if (!upgraded)
            {
                await secure.DisposeAsync();
            }
        }
    }

    /// <summary>
    /// Inlined muxer negotiation (libp2p connections spec): when both sides offered muxers in the security
    /// handshake, the first of the initiator's list that the responder also offered is used, with no
    /// multistream-select round; otherwise the muxer is negotiated as usual.
    /// </summary>
    private bool AgreedEarly(ISecureChannel secure, bool initiator)
    {
        var local = _earlyMuxers;
        var remote = secure.RemoteEarlyMuxers;
        if (local.Count == 0 || remote.Count == 0)
        {
            return false;
        }
        var (first, second) = initiator ? (local, remote) : (remote, local);
        var chosen = first.FirstOrDefault(m => second.Contains(m, StringComparer.Ordinal));
        return chosen == _muxer.ProtocolId;
    }

    private async ValueTask NegotiateAsync(IDuplexPipe pipe, string protocol, bool initiator, CancellationToken ct)
    {
        if (initiator)
        {
            await MultistreamSelect.SelectAsync(pipe, [protocol], _multistream, ct);
        }
        else
        {
            await MultistreamSelect.HandleAsync(pipe, p => p == protocol, _multistream, ct);
        }
    }
}
