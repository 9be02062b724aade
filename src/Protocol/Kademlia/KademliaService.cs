using Google.Protobuf;
using Microsoft.Extensions.Logging;
using Potluck.Protocol.Framing;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Metrics;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Kademlia;

/// <summary>
/// Kademlia DHT per https://github.com/libp2p/specs/blob/master/kad-dht/README.md: the <c>dht.proto</c> messages,
/// unsigned-varint length-prefixed, one request/response per exchange on a fresh stream (inbound streams may carry
/// several), FIND_NODE, GET_VALUE/PUT_VALUE with namespace validators, ADD_PROVIDER/GET_PROVIDERS, iterative
/// lookups (<see cref="ClosestPeersLookup"/>) over a k-bucket <see cref="RoutingTable"/>.
/// Deviations: the protocol id defaults to <c>/potluck/kad/1.0.0</c> (a separate DHT; set
/// <see cref="KademliaOptions.ProtocolId"/> to <see cref="IpfsProtocolId"/> for the public one); GET_VALUE does not
/// send the best record back to peers that returned an outdated one; records are not signed beyond what their
/// namespace validator checks. Client/server mode can be switched at run time (<see cref="SetMode"/>; with
/// <see cref="KademliaOptions.FollowReachability"/> the node follows AutoNAT's verdict, as go-libp2p's ModeAuto does).
/// </summary>
public sealed partial class KademliaService : IAsyncDisposable
{
    public const string DefaultProtocolId = "/potluck/kad/1.0.0";
    public const string IpfsProtocolId = "/ipfs/kad/1.0.0";

    private const int MaxPreimageTries = 1 << 20;

    private readonly IHost _host;
    private readonly KademliaOptions _options;
    private readonly NodeRuntime _runtime;
    private readonly ILogger<KademliaService> _log;
    private readonly Random _random;
    private readonly object _gate = new();
    private readonly RoutingTable _table;
    private readonly RecordStore _records;
    private readonly ProviderStore _providers;
    private readonly KadRequestHandler _handler;
    private readonly Dictionary<string, (byte[] Key, DateTimeOffset LastProvided)> _provided = new(StringComparer.Ordinal);
    private readonly HashSet<PeerId> _probing = [];
    private readonly Dictionary<PeerId, int> _busyStrikes = [];

    /// <summary>Failed queries in a row, each "busy", after which a peer leaves the table anyway (one that always hangs up).</summary>
    internal const int MaxBusyStrikes = 3;
    private readonly BackgroundWork _work;
    private readonly ProtocolInstruments _instruments;
    private readonly object _modeGate = new();
    private int _mode;
    private int _maintaining;
    private int _disposed;

    /// <param name="instruments">The node's metrics; null counts into instruments of the service's own.</param>
    public KademliaService(IHost host, KademliaOptions options, NodeRuntime runtime, ILoggerFactory loggers, ProtocolInstruments? instruments = null)
    {
        _instruments = instruments ?? ProtocolInstruments.Detached();
        _host = host;
        _options = options;
        _runtime = runtime;
        _log = loggers.CreateLogger<KademliaService>();
        _random = runtime.CreateRandom("kademlia");
        _work = runtime.CreateBackgroundWork("kademlia", _log);
        _table = new RoutingTable(host.PeerId, options.K, options.ReplacementCacheSize);
        _records = new RecordStore(options.MaxRecords, options.MaxRecordSize);
        _providers = new ProviderStore(options.MaxProviderKeys, options.MaxProvidersPerKey);
        _handler = new KadRequestHandler(_table, _records, _providers, options, Describe);
        _mode = (int)options.Mode;
        if (options.Mode == KademliaMode.Server)
        {
            host.SetStreamHandler(options.ProtocolId, HandleStreamAsync);
        }
        host.Peers.Updated += OnPeerUpdated;
        host.Peers.Retain(InRoutingTable); // the table's peers keep their entries (key, protocols) while in it; their addresses still expire by their TTLs
    }

    public string ProtocolId => _options.ProtocolId;

    private bool InRoutingTable(PeerId peer)
    {
        lock (_gate)
        {
            return _table.Contains(peer);
        }
    }

    /// <summary>The current mode: <see cref="KademliaOptions.Mode"/> at first, then what <see cref="SetMode"/> last set.</summary>
    public KademliaMode Mode => (KademliaMode)Volatile.Read(ref _mode);

    /// <summary>
    /// Switches between server mode (answers queries, identify advertises the protocol) and client mode (no handler, so
    /// the protocol leaves identify and peers drop us from their tables on our identify push). Lookups work in both, and
    /// our own routing table is kept. Returns false when the service is already in that mode or disposed.
    /// </summary>
    public bool SetMode(KademliaMode mode)
    {
        lock (_modeGate)
        {
            if (_disposed != 0 || Mode == mode)
            {
                return false;
            }
            Volatile.Write(ref _mode, (int)mode);
            if (mode == KademliaMode.Server)
            {
                _host.SetStreamHandler(_options.ProtocolId, HandleStreamAsync);
            }
            else
            {
                _host.RemoveStreamHandler(_options.ProtocolId);
            }
        }
        _instruments.DhtModeSwitch(mode == KademliaMode.Server ? "server" : "client");
        return true;
    }

    public int RoutingTableSize
    {
        get
        {
            lock (_gate)
            {
                return _table.Count;
            }
        }
    }

    /// <summary>Records held (ours and others'), for tests and metrics.</summary>
    internal int StoredRecordCount
    {
        get
        {
            lock (_gate)
            {
                return _records.Count;
            }
        }
    }

    /// <summary>
    /// Raised after the routing table gained or lost a peer (outside the service's lock, on whichever thread made the
    /// change). <see cref="WaitUntilAsync"/> is the race-free way to wait on it.
    /// </summary>
    public event Action? Changed;

    /// <summary>
    /// Completes when <paramref name="condition"/> holds for this service; re-checked after every routing-table change.
    /// It subscribes before it checks, so a change made between the check and the wait is never missed (no polling).
    /// </summary>
    public async Task WaitUntilAsync(Func<KademliaService, bool> condition, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(condition);
        while (true)
        {
            var signal = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            void OnChanged() => signal.TrySetResult();
            Changed += OnChanged;
            try
            {
                if (condition(this))
                {
                    return;
                }
                await LoopSafeWait.WaitAsync(signal.Task, ct);
            }
            finally
            {
                Changed -= OnChanged;
            }
        }
    }

    public IReadOnlyList<PeerId> RoutingTablePeers()
    {
        lock (_gate)
        {
            return _table.AllPeers();
        }
    }

    /// <summary>Starts periodic maintenance: expiry, bucket refresh, republishing records and provider announcements.</summary>
    public void Start()
    {
        if (Interlocked.Exchange(ref _maintaining, 1) == 0)
        {
            // The timer is made here, not in the loop, so virtual time moved right after Start is seen.
            var timer = new PeriodicTimer(_options.MaintenanceInterval, _runtime.Time);
            _work.Run("maintenance", ct => MaintainAsync(timer, ct));
        }
    }

    /// <summary>
    /// Joins the DHT through <paramref name="bootstrap"/> (addresses ending in /p2p/…) and the peers the peer store
    /// already knows to speak the protocol: a lookup for our own key, then the refresh of every bucket due, spread over
    /// <see cref="KademliaOptions.JoinRefreshSpread"/> (each left to the periodic maintenance at its time) or, with
    /// zero, at once before returning. Returns the routing table size.
    /// </summary>
    public async Task<int> BootstrapAsync(IEnumerable<Multiaddr> bootstrap, CancellationToken ct)
    {
        var seeds = new List<PeerId>();
        foreach (var address in bootstrap)
        {
            if (address.PeerId is { } id && id != _host.PeerId)
            {
                _host.Peers.AddAddresses(id, [address], AddressSource.Manual);
                seeds.Add(id);
            }
        }
        seeds.AddRange(_host.Peers.Snapshot().Where(p => p.Id != _host.PeerId && p.Protocols.Contains(_options.ProtocolId)).Select(p => p.Id));
        var started = _runtime.Time.GetUtcNow();
        var self = await LookupAsync(_host.PeerId.ToBytes(), Pb.Message.Types.MessageType.FindNode, null, seeds, ct, DialReason.DhtBootstrap);
        lock (_gate)
        {
            // The buckets nearer than our k-th closest peer hold nobody that lookup did not meet: no refresh lookups there.
            _table.MarkCoveredBySelfLookup(self.Closest, _runtime.Time.GetUtcNow());
        }
        if (_options.JoinRefreshSpread > TimeSpan.Zero)
        {
            ScheduleJoinRefresh(started);
        }
        else
        {
            await RefreshBucketsAsync(started, ct);
        }
        return RoutingTableSize;
    }

    /// <summary>
    /// <see cref="KademliaOptions.JoinRefreshSpread"/>: the j-th of the m buckets this join has not refreshed becomes due
    /// for the periodic refresh at <paramref name="started"/> + spread·(j + 1)/m (its refresh clock is set back so),
    /// unless a lookup for a key in it uses it first; a full one counts as refreshed now.
    /// </summary>
    private void ScheduleJoinRefresh(DateTimeOffset started)
    {
        lock (_gate)
        {
            var now = _runtime.Time.GetUtcNow();
            var due = _table.BucketsDueForRefresh(now, now - started + TimeSpan.FromTicks(1), _options.MaxRefreshBucket);
            for (var j = 0; j < due.Count; j++)
            {
                var bucket = due[j];
                var refreshed = _table.CountInBucket(bucket) >= _options.K
                    ? now
                    : started + (_options.JoinRefreshSpread * (j + 1) / due.Count) - _options.BucketRefreshInterval;
                if (refreshed > _table.LastRefreshed(bucket))
                {
                    _table.MarkRefreshed(bucket, refreshed);
                }
            }
        }
    }

    /// <summary>The addresses of <paramref name="peer"/>: known ones if connected, else found by a FIND_NODE lookup; empty if not found.</summary>
    public async Task<IReadOnlyList<Multiaddr>> FindPeerAsync(PeerId peer, CancellationToken ct)
    {
        if (peer == _host.PeerId)
        {
            return _host.ListenAddresses;
        }
        if (_host.ConnectionManager.IsConnected(peer))
        {
            return _host.Peers.GetAddresses(peer);
        }
        var found = false;
        await LookupAsync(peer.ToBytes(), Pb.Message.Types.MessageType.FindNode, (from, response) =>
        {
            found |= from == peer || KadMessages.ReadPeers(response.CloserPeers, _options, _host.PeerId).Any(p => p.Id == peer && p.Addresses.Count > 0);
            return found;
        }, [], ct);
        return found ? _host.Peers.GetAddresses(peer) : [];
    }

    /// <summary>The k peers closest to <paramref name="key"/> that answered, closest first.</summary>
    public async Task<IReadOnlyList<PeerId>> GetClosestPeersAsync(byte[] key, CancellationToken ct)
    {
        CheckKey(key);
        return (await LookupAsync(key, Pb.Message.Types.MessageType.FindNode, null, [], ct)).Closest;
    }

    /// <summary>Stores a record locally and at the k closest peers; returns how many peers accepted it.</summary>
    /// <exception cref="RecordValidationException">No validator for the key's namespace, or the validator refused it.</exception>
    public async Task<int> PutValueAsync(byte[] key, byte[] value, CancellationToken ct)
    {
        CheckKey(key);
        if (value.Length > _options.MaxRecordSize)
        {
            throw new ArgumentException($"record value over {_options.MaxRecordSize} bytes", nameof(value));
        }
        if (!_options.Validators.Validate(key, value))
        {
            throw new RecordValidationException("the record failed validation (unknown namespace or invalid value)");
        }
        lock (_gate)
        {
            if (_records.Put(key, value, _runtime.Time.GetUtcNow(), isLocal: true) != StoreResult.Stored)
            {
                throw new ResourceLimitException("dht records", _options.MaxRecords, "the record store is full");
            }
        }
        return await PublishRecordAsync(key, value, ct);
    }

    /// <summary>The best valid value for <paramref name="key"/> among ours and the k closest peers', or null.</summary>
    public async Task<byte[]?> GetValueAsync(byte[] key, CancellationToken ct)
    {
        CheckKey(key);
        var values = new List<byte[]>();
        lock (_gate)
        {
            if (_records.Get(key) is { } local && _options.Validators.Validate(key, local.Value))
            {
                values.Add(local.Value);
            }
        }
        await LookupAsync(key, Pb.Message.Types.MessageType.GetValue, (_, response) =>
        {
            if (response.Record is { } r && r.Key.Span.SequenceEqual(key) && values.Count < _options.K)
            {
                var value = r.Value.ToByteArray();
                if (_options.Validators.Validate(key, value) && !values.Any(v => v.AsSpan().SequenceEqual(value)))
                {
                    values.Add(value);
                }
            }
            return false;
        }, [], ct);
        var best = _options.Validators.Select(key, values);
        return best >= 0 ? values[best] : null;
    }

    /// <summary>Announces that we provide <paramref name="key"/> to the k closest peers; returns how many took it.</summary>
    public async Task<int> ProvideAsync(byte[] key, CancellationToken ct)
    {
        CheckKey(key);
        var now = _runtime.Time.GetUtcNow();
        lock (_gate)
        {
            _providers.Add(key, _host.PeerId, now + _options.ProviderTtl);
            _provided[Convert.ToBase64String(key)] = (key, now);
        }
        var closest = await GetClosestPeersAsync(key, ct);
        var message = new Pb.Message { Type = Pb.Message.Types.MessageType.AddProvider, Key = ByteString.CopyFrom(key) };
        message.ProviderPeers.Add(KadMessages.ToPb(_host.PeerId, _host.ListenAddresses, connected: true));
        using var reason = DialReason.Use(DialReason.DhtStore);
        var results = await Task.WhenAll(closest.Select(p => RequestAsync(p, message, expectResponse: false, ct)));
        return results.Count(r => r is not null);
    }

    /// <summary>Up to <paramref name="max"/> providers of <paramref name="key"/> (never ourselves); their addresses go to the peer store.</summary>
    public async Task<IReadOnlyList<KadPeer>> FindProvidersAsync(byte[] key, int max, CancellationToken ct)
    {
        CheckKey(key);
        var found = new Dictionary<PeerId, KadPeer>();
        lock (_gate)
        {
            foreach (var p in _providers.Get(key, _runtime.Time.GetUtcNow()))
            {
                if (p != _host.PeerId && found.Count < max)
                {
                    found[p] = new KadPeer(p, _host.Peers.GetAddresses(p));
                }
            }
        }
        if (found.Count >= max)
        {
            return [.. found.Values];
        }
        await LookupAsync(key, Pb.Message.Types.MessageType.GetProviders, (_, response) =>
        {
            IReadOnlyList<Multiaddr>? own = null;
            foreach (var p in KadMessages.ReadPeers(response.ProviderPeers, _options, _host.PeerId))
            {
                if (found.Count >= max)
                {
                    break;
                }
                AddDiscovered(p, ref own);
                found.TryAdd(p.Id, new KadPeer(p.Id, _host.Peers.GetAddresses(p.Id)));
            }
            return found.Count >= max;
        }, [], ct);
        return [.. found.Values];
    }

    /// <summary>One maintenance pass (what the periodic timer runs): expiry, due bucket refreshes, due republishing.</summary>
    public async Task RunMaintenanceAsync(CancellationToken ct)
    {
        var now = _runtime.Time.GetUtcNow();
        IReadOnlyList<KadRecord> records;
        List<byte[]> reprovide;
        lock (_gate)
        {
            _records.RemoveExpired(now, _options.RecordTtl);
            _providers.RemoveExpired(now);
            records = _records.DueForRepublish(now, _options.RecordRepublishInterval);
            reprovide = _provided.Values.Where(p => now - p.LastProvided >= _options.ProviderRepublishInterval).Select(p => p.Key).ToList();
        }
        await RefreshBucketsAsync(null, ct);
        foreach (var record in records)
        {
            await PublishRecordAsync(record.Key, record.Value, ct);
            lock (_gate)
            {
                _records.MarkPublished(record.Key, _runtime.Time.GetUtcNow());
            }
        }
        foreach (var key in reprovide)
        {
            await ProvideAsync(key, ct);
        }
    }

    private async Task MaintainAsync(PeriodicTimer timer, CancellationToken stopping)
    {
        using var owned = timer;
        try
        {
            while (await timer.WaitForNextTickAsync(stopping))
            {
                try
                {
                    await RunMaintenanceAsync(stopping);
                }
                catch (Exception e) when (Failures.Classify(e, stopping) is { Kind: not FailureKind.Cancelled } failure)
                {
                    // One pass failed (every request already absorbs the remote's faults): try again next tick.
                    LogMaintenanceFailed(failure.Kind, e);
                }
            }
        }
        catch (OperationCanceledException) when (stopping.IsCancellationRequested)
        {
        }
    }

    /// <param name="bootstrapStarted">At bootstrap, when it began: every bucket is due but the full ones and the ones a
    /// lookup of this bootstrap covered (the self-lookup above all). Null: maintenance, buckets not refreshed within
    /// <see cref="KademliaOptions.BucketRefreshInterval"/>.</param>
    private async Task RefreshBucketsAsync(DateTimeOffset? bootstrapStarted, CancellationToken ct)
    {
        IReadOnlyList<int> due;
        lock (_gate)
        {
            var now = _runtime.Time.GetUtcNow();
            // At bootstrap the full buckets stay in: each is skipped at its slot and counts as refreshed then.
            due = bootstrapStarted is { } started
                ? _table.BucketsDueForRefresh(now, now - started + TimeSpan.FromTicks(1), _options.MaxRefreshBucket)
                : _table.BucketsDueForRefresh(now, _options.BucketRefreshInterval, _options.MaxRefreshBucket);
        }
        foreach (var bucket in due)
        {
            if (bootstrapStarted is { } since && !JoinRefreshNeeded(bucket, since))
            {
                continue; // an earlier refresh of this bootstrap filled or used it
            }
            if (KeyForBucket(bucket) is { } key)
            {
                await LookupAsync(key, Pb.Message.Types.MessageType.FindNode, null, [], ct, DialReason.DhtRefresh);
            }
        }
    }

    /// <summary>
    /// Whether a join's refresh of <paramref name="bucket"/> at once is still wanted: not when it holds k peers or a
    /// lookup for a key in it finished since <paramref name="since"/>; a full bucket then counts as refreshed now, so the
    /// periodic refresh leaves it until <see cref="KademliaOptions.BucketRefreshInterval"/> has passed unused.
    /// </summary>
    private bool JoinRefreshNeeded(int bucket, DateTimeOffset since)
    {
        lock (_gate)
        {
            if (_table.LastRefreshed(bucket) >= since)
            {
                return false;
            }
            if (_table.CountInBucket(bucket) >= _options.K)
            {
                _table.MarkRefreshed(bucket, _runtime.Time.GetUtcNow());
                return false;
            }
            return true;
        }
    }

    /// <summary>A random key whose SHA-256 falls in the bucket (a preimage search: about 2^(bucket+1) hashes).</summary>
    private byte[]? KeyForBucket(int bucket)
    {
        var candidate = new byte[KadKey.Length];
        for (var i = 0; i < MaxPreimageTries; i++)
        {
            lock (_random)
            {
                _random.NextBytes(candidate);
            }
            if (_table.BucketIndexOf(KadKey.FromKey(candidate)) == bucket)
            {
                return candidate;
            }
        }
        return null;
    }

    private async Task<int> PublishRecordAsync(byte[] key, byte[] value, CancellationToken ct)
    {
        var closest = await GetClosestPeersAsync(key, ct);
        var message = new Pb.Message
        {
            Type = Pb.Message.Types.MessageType.PutValue,
            Key = ByteString.CopyFrom(key),
            Record = new Pb.Record { Key = ByteString.CopyFrom(key), Value = ByteString.CopyFrom(value) },
        };
        using var reason = DialReason.Use(DialReason.DhtStore);
        var results = await Task.WhenAll(closest.Select(p => RequestAsync(p, message, expectResponse: true, ct)));
        return results.Count(r => r?.Record is { } echoed && echoed.Value.Span.SequenceEqual(value));
    }

    private sealed record LookupOutcome(IReadOnlyList<PeerId> Closest, int Hops, int Queries);

    /// <summary>Drives a <see cref="ClosestPeersLookup"/>: sends requests it asks for, feeds answers back. <paramref name="onResponse"/> returning true ends it.</summary>
    private async Task<LookupOutcome> LookupAsync(byte[] key, Pb.Message.Types.MessageType type, Func<PeerId, Pb.Message, bool>? onResponse,
        IEnumerable<PeerId> extraSeeds, CancellationToken ct, string reason = DialReason.DhtLookup)
    {
        using var dialReason = DialReason.Use(reason);
        var target = KadKey.FromKey(key);
        var request = new Pb.Message { Type = type, Key = ByteString.CopyFrom(key) };
        ClosestPeersLookup lookup;
        lock (_gate)
        {
            lookup = new ClosestPeersLookup(target, _table.Closest(target, _options.K).Concat(extraSeeds), _options.LookupOptions, _host.PeerId);
        }
        using var overall = new CancellationTokenSource(_options.LookupTimeout, _runtime.Time);
        using var linked = _work.Link(overall.Token, ct);
        var pending = new Dictionary<Task<(Pb.Message? Response, FailureKind? Failure, bool Unreachable)>, PeerId>();
        var started = _runtime.Time.GetUtcNow();
        // Only the table's own lookups (the join's self-lookup, refreshes): a caller of the others goes on to use the
        // peers found (a store, a dial to the peer sought).
        var closeAfter = _options.CloseAfterLookup && reason is DialReason.DhtBootstrap or DialReason.DhtRefresh;
        List<PeerId>? dialed = null;
        try
        {
            while (true)
            {
                LookupStep step;
                // Widening a stalled lookup to k in flight could dial k peers: not with fewer free connections than that.
                lookup.WidenWhenStalled = _host.ConnectionManager.FreeSlots >= _options.K;
                while ((step = lookup.Next(_runtime.Time.GetUtcNow())).Kind == LookupStepKind.Query)
                {
                    if (BackedOff(step.Peer))
                    {
                        // It hung up on us moments ago (full): ask the next candidate; it stays in the table.
                        lookup.OnFailure(step.Peer);
                        _instruments.DhtQuerySkipped(TypeTag(type));
                        continue;
                    }
                    if (closeAfter && !_host.ConnectionManager.IsConnected(step.Peer))
                    {
                        (dialed ??= []).Add(step.Peer);
                    }
                    pending[RequestOutcomeAsync(step.Peer, request, expectResponse: true, linked.Token)] = step.Peer;
                }
                if (step.Kind == LookupStepKind.Finished || pending.Count == 0)
                {
                    break;
                }
                var done = await Task.WhenAny(pending.Keys);
                var peer = pending[done];
                pending.Remove(done);
                var (response, failure, unreachable) = await done;
                if (response is null)
                {
                    lookup.OnFailure(peer);
                    if (!linked.IsCancellationRequested && (unreachable || !Busy(peer, failure)))
                    {
                        RemovePeer(peer);
                    }
                    continue;
                }
                var closer = KadMessages.ReadPeers(response.CloserPeers, _options, _host.PeerId);
                IReadOnlyList<Multiaddr>? own = null;
                foreach (var p in closer)
                {
                    AddDiscovered(p, ref own);
                }
                lookup.OnSuccess(peer, closer.Where(p => p.Addresses.Count > 0).Select(p => p.Id));
                lock (_gate)
                {
                    _busyStrikes.Remove(peer);
                }
                Consider(peer);
                if (onResponse?.Invoke(peer, response) == true)
                {
                    lookup.Finish();
                }
            }
        }
        finally
        {
            if (pending.Count > 0)
            {
                // Cancel, not CancelAsync: the requests' callbacks run here, on the runtime's scheduler.
                linked.Cancel();
                await Task.WhenAll(pending.Keys);
            }
            if (dialed is not null)
            {
                CloseLookupConnections(dialed, started);
            }
        }
        ct.ThrowIfCancellationRequested();
        lock (_gate)
        {
            _table.MarkRefreshed(_table.BucketIndexOf(target), _runtime.Time.GetUtcNow());
        }
        LogLookupDone(type, lookup.Result.Count, lookup.Hops, lookup.QueriesSent);
        _instruments.DhtLookup(TypeTag(type));
        return new LookupOutcome(lookup.Result, lookup.Hops, lookup.QueriesSent);
    }

    /// <summary>
    /// <see cref="KademliaOptions.CloseAfterLookup"/>: with fewer than k connections free, the ones this lookup dialled go
    /// now, if nothing but background streams use them, rather than later to a trim that may pick one in use.
    /// </summary>
    private void CloseLookupConnections(List<PeerId> dialed, DateTimeOffset started)
    {
        var manager = _host.ConnectionManager;
        if (manager.FreeSlots >= _options.K)
        {
            return;
        }
        foreach (var peer in dialed)
        {
            manager.CloseUnused(peer, started, IsBackground);
        }
    }

    private bool IsBackground(string protocol) =>
        _options.BackgroundProtocols.Any(p => protocol.StartsWith(p, StringComparison.Ordinal));

    /// <summary>
    /// Whether a failed query (not a failed dial: a peer we cannot reach is gone) says the peer is busy rather than
    /// gone, so it stays in the routing table: a connection limit refused it, or it hung up on us moments ago (a full
    /// node trims). Removing it would only make the next refresh or probe dial it again.
    /// </summary>
    private bool Busy(PeerId peer, FailureKind? failure)
    {
        var busy = failure == FailureKind.ResourceLimit
            || (_options.RedialBackoff > TimeSpan.Zero && _host.ConnectionManager.HungUpRecently(peer, _options.RedialBackoff));
        lock (_gate)
        {
            if (!busy || !_table.Contains(peer))
            {
                _busyStrikes.Remove(peer);
                return false;
            }
            // A peer that hangs up on every query is not busy but useless (or hostile): after a few in a row it goes.
            var strikes = _busyStrikes[peer] = _busyStrikes.GetValueOrDefault(peer) + 1;
            if (strikes >= MaxBusyStrikes)
            {
                _busyStrikes.Remove(peer);
                return false;
            }
            return true;
        }
    }

    /// <summary>One request on a fresh stream; null on any failure (never throws for network or remote faults).</summary>
    private async Task<Pb.Message?> RequestAsync(PeerId peer, Pb.Message request, bool expectResponse, CancellationToken ct) =>
        (await RequestOutcomeAsync(peer, request, expectResponse, ct)).Response;

    /// <summary>
    /// <see cref="RequestAsync"/>, with the kind of failure when there is no response, and whether it was a dial that
    /// found nobody (unreachable, timed out, refused at the handshake) rather than a limit or a connection that closed.
    /// </summary>
    private async Task<(Pb.Message? Response, FailureKind? Failure, bool Unreachable)> RequestOutcomeAsync(PeerId peer, Pb.Message request, bool expectResponse, CancellationToken ct)
    {
        var stopping = _work.Stopping;
        using var timeout = new CancellationTokenSource(_options.RequestTimeout, _runtime.Time);
        using var linked = _work.Link(timeout.Token, ct);
        IStream? stream = null;
        try
        {
            var opening = await _host.TryNewStreamAsync(peer, [_options.ProtocolId], linked.Token);
            if (opening.Failure is { } refused)
            {
                // Not a DHT server, or gone while the stream opened: as the catch below would count it, without the throw.
                _instruments.DhtQuery(TypeTag(request.Type), refused.Kind);
                LogRequestFailed(peer, refused.Kind, refused.Reason);
                return (null, refused.Kind, false);
            }
            stream = opening.Stream!;
            await LengthPrefixed.WriteAsync(stream.Output, request.ToByteArray(), linked.Token);
            if (!expectResponse)
            {
                await stream.Output.CompleteAsync();
            }
            // With a response due, our side stays open until it has arrived: js-libp2p's kad-dht reads the next
            // request right after answering and, when our FIN lands during that read, resets the stream, which
            // can drop its answer (go keeps request streams open for reuse and so never meets this).
            var bytes = await LengthPrefixed.ReadAsync(stream.Input, _options.MaxMessageSize, _options.ProtocolId, linked.Token);
            if (expectResponse)
            {
                await stream.Output.CompleteAsync();
            }
            if (!expectResponse)
            {
                // ADD_PROVIDER has no response: the remote closing its side says it has read the request.
                if (bytes is not null)
                {
                    throw new ProtocolViolationException(_options.ProtocolId, "unexpected response to ADD_PROVIDER", ViolationCode.UnexpectedMessage);
                }
                _instruments.DhtQuery(TypeTag(request.Type), null);
                return (request, null, false);
            }
            if (bytes is null)
            {
                throw new ProtocolViolationException(_options.ProtocolId, "stream ended without a response", ViolationCode.Malformed);
            }
            if (!KadMessages.TryParse(bytes, _options, out var response, out var error))
            {
                throw new ProtocolViolationException(_options.ProtocolId, error, ViolationCode.Malformed);
            }
            if (response.Type != request.Type)
            {
                throw new ProtocolViolationException(_options.ProtocolId, "response type differs from the request's", ViolationCode.UnexpectedMessage);
            }
            _instruments.DhtQuery(TypeTag(request.Type), null);
            return (response, null, false);
        }
        catch (Exception e)
        {
            // The one catch site of an outbound request: whatever failed, the lookup carries on without this peer.
            stream?.Reset();
            var failure = Failures.Classify(e, stopping);
            // A request that ran out its own time is the remote's stall; one its lookup called off (it ended) is ours.
            _instruments.DhtQuery(TypeTag(request.Type),
                e is OperationCanceledException && timeout.IsCancellationRequested ? FailureKind.PeerGone
                : e is OperationCanceledException && ct.IsCancellationRequested ? FailureKind.Cancelled : failure.Kind);
            if (failure.Kind == FailureKind.Internal)
            {
                LogUnexpected(peer, e);
            }
            else if (failure.Kind != FailureKind.Cancelled)
            {
                LogRequestFailed(peer, failure.Kind, failure.Reason);
            }
            return (null, failure.Kind, e is DialException { Failure: not DialFailure.TooManyConnections });
        }
        finally
        {
            if (stream is not null)
            {
                await stream.DisposeAsync();
            }
        }
    }

    /// <summary>A DHT message type as a metric tag (a fixed set: the enum's names in lower case).</summary>
    private static string TypeTag(Pb.Message.Types.MessageType type) => type switch
    {
        Pb.Message.Types.MessageType.PutValue => "put_value",
        Pb.Message.Types.MessageType.GetValue => "get_value",
        Pb.Message.Types.MessageType.AddProvider => "add_provider",
        Pb.Message.Types.MessageType.GetProviders => "get_providers",
        Pb.Message.Types.MessageType.FindNode => "find_node",
        Pb.Message.Types.MessageType.Ping => "ping",
        _ => "other",
    };

    private async Task HandleStreamAsync(IStream stream, CancellationToken ct)
    {
        var remote = stream.RemotePeer;
        if (_host.Peers.SupportsProtocol(remote, _options.ProtocolId))
        {
            Consider(remote);
        }
        // No catch here: a violation, a timeout or a peer that went away reaches the host's one catch site of inbound
        // streams, which resets the stream and logs it at Debug.
        for (var i = 0; i < _options.MaxRequestsPerStream; i++)
        {
            using var idle = new CancellationTokenSource(_options.InboundIdleTimeout, _runtime.Time);
            using var linked = _work.Link(idle.Token, ct);
            var read = await LengthPrefixed.TryReadAsync(stream.Input, _options.MaxMessageSize, _options.ProtocolId, linked.Token);
            if (read.Failure is { Kind: FailureKind.PeerGone })
            {
                return; // the requester reset the stream (its lookup ended) or left: expected, not thrown
            }
            if (read.Cause is { } other)
            {
                System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(other); // a limit or a violation: the router's to count
            }
            if (read.Message is not { } bytes)
            {
                break;
            }
            if (!_host.Budgets.TryTake(remote, PeerBudgets.DhtRequests))
            {
                throw new ResourceLimitException(PeerBudgets.DhtRequests, _host.Budgets.Options.DhtRequests.Burst, $"{PeerBudgets.DhtRequests}: {remote} is over its budget");
            }
            if (!KadMessages.TryParse(bytes, _options, out var request, out var error))
            {
                throw new ProtocolViolationException(_options.ProtocolId, error, ViolationCode.Malformed);
            }
            Pb.Message? response;
            List<KadPeer> learned;
            lock (_gate)
            {
                response = _handler.Handle(remote, request, _runtime.Time.GetUtcNow());
                learned = [.. _handler.LearnedProviders];
            }
            IReadOnlyList<Multiaddr>? own = null;
            foreach (var p in learned)
            {
                AddDiscovered(p, ref own, DiscoveryChannel.Other);
            }
            if (response is not null)
            {
                await LengthPrefixed.WriteAsync(stream.Output, response.ToByteArray(), linked.Token);
            }
        }
        await stream.Output.CompleteAsync();
    }

    private (IReadOnlyList<Multiaddr>, bool) Describe(PeerId peer) =>
        (_host.Peers.GetAddresses(peer), _host.ConnectionManager.IsConnected(peer));

    /// <summary>
    /// Puts addresses a third party told us into the peer store, never our own id or addresses: a lookup's answers for
    /// <see cref="PeerStoreOptions.LookupAddressTtl"/> (go-libp2p-kad-dht's <c>TempAddrTTL</c>), a provider that
    /// announced itself to us (<paramref name="channel"/> Other) for <see cref="PeerStoreOptions.DiscoveredAddressTtl"/>,
    /// since we hand its addresses out with its provider record (go-libp2p-kad-dht's <c>ProviderManager.AddProvider</c>
    /// keeps those for <c>ProviderAddrTTL</c>, longer still).
    /// </summary>
    /// <summary>
    /// Stores what a response said of <paramref name="peer"/>'s addresses, less this node's own. <paramref name="own"/>:
    /// this node's addresses, computed at the first peer that needs them and kept for the rest of the same response (the
    /// host builds them anew on every read).
    /// </summary>
    private void AddDiscovered(KadPeer peer, ref IReadOnlyList<Multiaddr>? own, DiscoveryChannel channel = DiscoveryChannel.DhtLookup)
    {
        if (peer.Id == _host.PeerId || peer.Addresses.Count == 0)
        {
            return;
        }
        own ??= _host.ListenAddresses;
        var addresses = peer.Addresses;
        foreach (var a in addresses)
        {
            if (own.Contains(a))
            {
                var ownAddresses = own;
                addresses = addresses.Where(x => !ownAddresses.Contains(x)).ToArray();
                break;
            }
        }
        if (addresses.Count > 0)
        {
            _host.Peers.AddDiscoveredAddresses(peer.Id, addresses, channel);
        }
    }

    private void OnPeerUpdated(PeerId peer)
    {
        if (peer == _host.PeerId || _disposed != 0)
        {
            return;
        }
        if (_host.Peers.SupportsProtocol(peer, _options.ProtocolId))
        {
            Consider(peer);
        }
        else if (_host.Peers.Get(peer) is { Protocols.Count: > 0 })
        {
            // Identify says it no longer speaks the DHT in server mode.
            RemovePeer(peer);
        }
    }

    /// <summary>A peer shown to serve the DHT: add it, or probe the bucket's oldest entry if the bucket is full.</summary>
    private void Consider(PeerId peer)
    {
        RoutingUpdate update;
        lock (_gate)
        {
            update = _table.AddOrRefresh(peer);
        }
        if (update.Kind == RoutingUpdateKind.Added)
        {
            RaiseChanged();
        }
        if (update is { Kind: RoutingUpdateKind.Pending, ProbeCandidate: { } oldest })
        {
            _work.Run("probe", ct => ProbeAsync(oldest, ct));
        }
    }

    /// <summary>Whether a lookup skips <paramref name="peer"/> now (<see cref="KademliaOptions.RedialBackoff"/>).</summary>
    private bool BackedOff(PeerId peer) =>
        _options.RedialBackoff > TimeSpan.Zero && RoutingTableSize >= 2 * _options.K
        && _host.ConnectionManager.HungUpRecently(peer, _options.RedialBackoff);

    private async Task ProbeAsync(PeerId peer, CancellationToken stopping)
    {
        if (_options.RedialBackoff > TimeSpan.Zero
            && (_host.ConnectionManager.IsConnected(peer) || _host.ConnectionManager.HungUpRecently(peer, _options.RedialBackoff)))
        {
            // Alive: connected now, or connected until it hung up on us moments ago. A dial to ask would only churn.
            bool added;
            lock (_gate)
            {
                added = _table.AddOrRefresh(peer).Kind == RoutingUpdateKind.Added;
            }
            if (added)
            {
                RaiseChanged();
            }
            return;
        }
        lock (_gate)
        {
            if (!_probing.Add(peer))
            {
                return;
            }
        }
        try
        {
            using var reason = DialReason.Use(DialReason.DhtProbe);
            var probe = new Pb.Message { Type = Pb.Message.Types.MessageType.FindNode, Key = ByteString.CopyFrom(_host.PeerId.Bytes) };
            var alive = await RequestAsync(peer, probe, expectResponse: true, stopping) is not null;
            bool changed;
            lock (_gate)
            {
                changed = alive
                    ? _table.AddOrRefresh(peer).Kind == RoutingUpdateKind.Added
                    : _table.Remove(peer);
                _busyStrikes.Remove(peer);
            }
            if (changed)
            {
                RaiseChanged();
            }
        }
        finally
        {
            lock (_gate)
            {
                _probing.Remove(peer);
            }
        }
    }

    private void RemovePeer(PeerId peer)
    {
        bool removed;
        lock (_gate)
        {
            removed = _table.Remove(peer);
            _busyStrikes.Remove(peer);
        }
        if (removed)
        {
            RaiseChanged();
        }
    }

    private void RaiseChanged()
    {
        if (_disposed == 0)
        {
            Changed?.Invoke();
        }
    }

    private void CheckKey(byte[] key)
    {
        if (key.Length == 0 || key.Length > _options.MaxKeySize)
        {
            throw new ArgumentException($"a key is 1…{_options.MaxKeySize} bytes", nameof(key));
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        _host.Peers.Updated -= OnPeerUpdated;
        lock (_modeGate)
        {
            if (Mode == KademliaMode.Server)
            {
                _host.RemoveStreamHandler(_options.ProtocolId);
            }
        }
        await _work.DisposeAsync();
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "DHT request to {Peer} failed: {Kind}: {Reason}")]
    private partial void LogRequestFailed(PeerId peer, FailureKind kind, string reason);

    [LoggerMessage(Level = LogLevel.Error, Message = "DHT request to {Peer} failed unexpectedly")]
    private partial void LogUnexpected(PeerId peer, Exception e);


    [LoggerMessage(Level = LogLevel.Debug, Message = "DHT {Type} lookup done: {Found} peers, {Hops} hops, {Queries} queries")]
    private partial void LogLookupDone(Pb.Message.Types.MessageType type, int found, int hops, int queries);

    [LoggerMessage(Level = LogLevel.Error, Message = "DHT maintenance failed ({Kind})")]
    private partial void LogMaintenanceFailed(FailureKind kind, Exception e);
}
