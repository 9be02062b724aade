using Potluck.Protocol.Identity;
using Potluck.Protocol.Metrics;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Multistream;
using Potluck.Protocol.Muxing;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Security;
using Potluck.Protocol.Transport;

namespace Potluck.Protocol.Host;

/// <summary>An upgraded connection: raw transport → (pnet) → security → muxer, owned as one unit.</summary>
internal sealed class Connection : IConnection
{
    private readonly IRawConnection _raw;
    private readonly ISecureChannel _secure;
    private readonly IMuxedConnection _muxed;
    private readonly MultistreamOptions _multistream;
    private readonly TimeProvider _time;
    private readonly ProtocolInstruments _instruments;
    private int _closed;
    private long _lastActivityTicks;
    // Under the lock (this connection): one entry per protocol the connection has spoken, in the order first used; a
    // few (identify, gossip, Kademlia, ping, a lease), so an array searched in order, not a Dictionary (its buckets,
    // entries and comparer: ~270 B more per connection end). Null until the first stream.
    private ProtocolUse[]? _protocols;

    /// <summary>Streams of one protocol open now, and when one of them last opened or ended (UTC ticks).</summary>
    private struct ProtocolUse
    {
        public string Protocol;
        public int Open;
        public long LastTicks;
    }

    /// <param name="id">Unique within the host (the connection manager numbers them), for logs.</param>
    public Connection(long id, IRawConnection raw, ISecureChannel secure, IMuxedConnection muxed, Direction direction,
        MultistreamOptions multistream, TimeProvider time, ProtocolInstruments instruments)
    {
        _instruments = instruments;
        _raw = raw;
        _secure = secure;
        _muxed = muxed;
        _multistream = multistream;
        _time = time;
        Direction = direction;
        Id = id;
        Opened = time.GetUtcNow();
        LocalAddress = raw.Local;
        RemoteAddress = raw.Remote;
        _lastActivityTicks = Opened.UtcTicks;
    }

    public long Id { get; }

    public PeerId RemotePeer => _secure.RemotePeer;

    public PublicKey RemotePublicKey => _secure.RemotePublicKey;

    public Multiaddr LocalAddress { get; }

    public Multiaddr RemoteAddress { get; }

    public Direction Direction { get; }

    public DateTimeOffset Opened { get; }

    public int StreamCount => _muxed.StreamCount;

    public bool IsClosed => Volatile.Read(ref _closed) != 0 || _muxed.Completion.IsCompleted;

    /// <summary>Whether this side closed it (<see cref="CloseAsync"/>); false while open and when the remote hung up.</summary>
    internal bool ClosedLocally => Volatile.Read(ref _closed) != 0;

    /// <summary>Why this side closes it, when the connection manager does (<c>trimmed</c>, <c>room</c>, <c>idle</c>); null otherwise.</summary>
    internal string? CloseReason { get; set; }

    public IMuxedConnection Muxed => _muxed;

    /// <summary>An inbound connection's place in the resource manager's address scopes, released when it closes.</summary>
    internal ResourceManager.Admission? Admission { get; set; }

    public Task Completion => _muxed.Completion;

    public DateTimeOffset LastActivity => new(Interlocked.Read(ref _lastActivityTicks), TimeSpan.Zero);

    /// <summary>
    /// A stream of <paramref name="protocol"/> opened (+1) or ended (-1) on this connection, at the time of the call. A
    /// protocol whose streams have all ended stays in the table with 0 (<see cref="Carried"/>, <see cref="LastUsed"/>: a
    /// few entries, one per protocol the connection spoke).
    /// </summary>
    internal void CountStream(string protocol, int delta)
    {
        var now = _time.GetUtcNow().UtcTicks;
        lock (this)
        {
            var uses = _protocols;
            for (var i = 0; i < _protocolCount; i++)
            {
                ref var use = ref uses![i];
                if (string.Equals(use.Protocol, protocol, StringComparison.Ordinal))
                {
                    use.Open = Math.Max(0, use.Open + delta);
                    use.LastTicks = now;
                    return;
                }
            }
            if (uses is null || _protocolCount == uses.Length)
            {
                Array.Resize(ref _protocols, uses is null ? InitialProtocols : uses.Length * 2);
            }
            _protocols![_protocolCount++] = new ProtocolUse { Protocol = protocol, Open = Math.Max(0, delta), LastTicks = now };
        }
    }

    /// <summary>Streams open now whose protocol <paramref name="counts"/> accepts.</summary>
    internal int OpenStreams(Func<string, bool> counts)
    {
        lock (this)
        {
            var open = 0;
            for (var i = 0; i < _protocolCount; i++)
            {
                ref readonly var use = ref _protocols![i];
                if (counts(use.Protocol))
                {
                    open += use.Open;
                }
            }
            return open;
        }
    }

    /// <summary>Whether this connection has carried a negotiated stream whose protocol <paramref name="counts"/> accepts (open now or ended).</summary>
    internal bool Carried(Func<string, bool> counts)
    {
        lock (this)
        {
            for (var i = 0; i < _protocolCount; i++)
            {
                if (counts(_protocols![i].Protocol))
                {
                    return true;
                }
            }
            return false;
        }
    }

    /// <summary>
    /// When a stream whose protocol <paramref name="counts"/> accepts last opened or ended on this connection; when the
    /// connection opened if it never carried one (<see cref="HostOptions.IdleConnectionTimeout"/>).
    /// </summary>
    internal DateTimeOffset LastUsed(Func<string, bool> counts)
    {
        var last = Opened.UtcTicks;
        lock (this)
        {
            for (var i = 0; i < _protocolCount; i++)
            {
                ref readonly var use = ref _protocols![i];
                if (use.LastTicks > last && counts(use.Protocol))
                {
                    last = use.LastTicks;
                }
            }
        }
        return new DateTimeOffset(last, TimeSpan.Zero);
    }

    public void Touch() => Interlocked.Exchange(ref _lastActivityTicks, _time.GetUtcNow().UtcTicks);

    public async ValueTask<IStream> OpenStreamAsync(IReadOnlyList<string> protocols, CancellationToken ct)
    {
        var opening = await TryOpenStreamAsync(protocols, ct);
        return opening.Stream ?? throw opening.ToException();
    }

    /// <summary>
    /// Opens and negotiates a stream; the expected failures come back as a result: a closed connection, the remote's
    /// <c>na</c> to every proposal (the stream is then closed with a FIN, so the listener sees it end between two
    /// messages: no reset, nothing thrown on either side), a stream that ended or was reset during the negotiation.
    /// </summary>
    public async ValueTask<StreamOpening> TryOpenStreamAsync(IReadOnlyList<string> protocols, CancellationToken ct)
    {
        if (IsClosed)
        {
            return StreamOpening.Failed(new PeerGoneException("the connection is closed"));
        }
        IMuxedStream muxed;
        try
        {
            muxed = await _muxed.OpenStreamAsync(ct);
        }
        catch (PeerGoneException e)
        {
            return StreamOpening.Failed(e); // closed meanwhile
        }
        Multistream.Negotiation negotiation;
        try
        {
            negotiation = await MultistreamSelect.TrySelectAsync(muxed, protocols, _multistream, ct);
        }
        catch (Exception e)
        {
            muxed.Reset();
            await muxed.DisposeAsync();
            if (e is PeerGoneException)
            {
                return StreamOpening.Failed(e); // reset, or the connection closed, while negotiating
            }
            throw;
        }
        if (negotiation.Protocol is not { } protocol)
        {
            await muxed.DisposeAsync();
            return StreamOpening.Refused(negotiation);
        }
        _instruments.StreamOpened(protocol, Direction.Outbound);
        return StreamOpening.Opened(new Libp2pStream(muxed, protocol, this, Direction.Outbound));
    }

    public async ValueTask CloseAsync()
    {
        if (Interlocked.Exchange(ref _closed, 1) != 0)
        {
            return;
        }
        try
        {
            await _muxed.DisposeAsync();
        }
        finally
        {
            await _secure.DisposeAsync();
            await _raw.DisposeAsync();
        }
    }

    public override string ToString() => $"conn#{Id} {Direction} {RemotePeer} {RemoteAddress}";

    // Declared last, so the compiler-generated names of the members above (which events_hash hashes) stay as they were.
    private const int InitialProtocols = 4;

    /// <summary>The protocols this connection has carried a stream of, in the order first used (tests).</summary>
    internal string[] ProtocolsCarried
    {
        get
        {
            lock (this)
            {
                var result = new string[_protocolCount];
                for (var i = 0; i < _protocolCount; i++)
                {
                    result[i] = _protocols![i].Protocol;
                }
                return result;
            }
        }
    }

    private int _protocolCount;
}
