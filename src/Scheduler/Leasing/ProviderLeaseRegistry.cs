using Potluck.Protocol.Identity;

namespace Potluck.Scheduler.Leasing;

/// <summary>
/// What the registry did with one message: the lease it concerns (if any) and the step to carry out, and the leases of
/// requesters without standing it ended to make room for one in good standing, each with its own step.
/// </summary>
public readonly record struct ProviderDispatch(ProviderLease? Lease, LeaseStep Step)
{
    public IReadOnlyList<(ProviderLease Lease, LeaseStep Step)> Preempted { get; init; } = [];
}

/// <summary>
/// A provider's leases, keyed by (requester, request id), so that a retried request reaches the lease it created
/// rather than a second one. Decides requests against <see cref="ProviderPolicy"/> and
/// <see cref="ProviderCapacity"/> (reject Busy, Price, Policy, UnknownModule) and the module store's disk limit (a module
/// larger than the limit is refused by policy; one that finds no room while leases hold the rest, as busy, both "disk
/// full"), remembers finished leases and
/// rejections for <see cref="LeaseOptions.FinishedRetention"/> to answer retries alike, and tracks at most
/// <see cref="LeaseOptions.MaxTrackedLeases"/> requests. Pure: every call takes <c>now</c>; not thread-safe.
/// Busy rejections are not remembered: a retry after capacity frees up may be offered.
/// </summary>
public sealed class ProviderLeaseRegistry
{
    private readonly PrivateKey _key;
    private readonly ProviderPolicy _policy;
    private readonly IModuleCache _modules;
    private readonly LeaseOptions _options;
    private readonly Dictionary<(PeerId, ulong), ProviderLease> _leases = [];
    private readonly Dictionary<(PeerId, ulong), (LeaseRequest Request, LeaseReject Reject, DateTimeOffset At)> _rejected = [];
    private readonly Queue<((PeerId, ulong) Key, DateTimeOffset At, bool Rejected)> _evictionOrder = new();
    // Each requester's leases that were live when last looked at (finished ones are dropped when counted or pruned): a
    // request is checked against the requester's own leases, not a scan of every lease tracked (up to MaxTrackedLeases).
    private readonly Dictionary<PeerId, List<ProviderLease>> _liveByRequester = [];

    public ProviderLeaseRegistry(PrivateKey key, ProviderPolicy policy, ProviderCapacity capacity, IModuleCache modules, LeaseOptions options)
    {
        _key = key;
        _policy = policy;
        Capacity = capacity;
        _modules = modules;
        _options = options;
    }

    public ProviderCapacity Capacity { get; }

    /// <summary>The speed measured from this provider's own runs (fuel per second on one core); null until measured.</summary>
    public long? MeasuredSpeedFuelPerSecond { get; set; }

    /// <summary>
    /// The latest deadline a lease for <paramref name="request"/> gets, from <paramref name="now"/>: the input grace and the
    /// content's transfer time, plus the fuel limit at the measured (else configured) speed times
    /// <see cref="ProviderPolicy.DeadlineSlack"/> (at least <see cref="ProviderPolicy.MinRunTime"/>), and never beyond
    /// <see cref="ProviderPolicy.MaxDeadlineLead"/>. A request asking for a later deadline is offered this one.
    /// </summary>
    public DateTimeOffset LatestDeadline(LeaseRequest request, DateTimeOffset now)
    {
        var speed = Math.Max(1, MeasuredSpeedFuelPerSecond ?? _policy.SpeedFuelPerSecond);
        var run = TimeSpan.FromSeconds(Math.Min(_policy.MaxDeadlineLead.TotalSeconds, (double)request.FuelLimit / speed * Math.Max(1, _policy.DeadlineSlack)));
        var content = (_modules.Contains(request.ModuleHash) ? 0 : request.ModuleSize) + request.InputSize;
        var transfer = TimeSpan.FromSeconds(Math.Min(_policy.MaxDeadlineLead.TotalSeconds, (double)content / Math.Max(1, _options.MinContentBytesPerSecond)));
        var lead = _options.InputGrace + transfer + (run > _policy.MinRunTime ? run : _policy.MinRunTime);
        return now + (lead < _policy.MaxDeadlineLead ? lead : _policy.MaxDeadlineLead);
    }

    /// <summary>Requests refused for want of disk: a module larger than the whole limit, or no room while leases hold the rest.</summary>
    public long RefusedForDisk { get; private set; }

    /// <summary>Requests tracked: live and finished leases and remembered rejections.</summary>
    public int TrackedCount => _leases.Count + _rejected.Count;

    public IEnumerable<ProviderLease> Leases => _leases.Values;

    public ProviderLease? Find(PeerId requester, ulong requestId) => _leases.GetValueOrDefault((requester, requestId));

    /// <summary>Leases of <paramref name="requester"/> not yet finished (the same count as scanning <see cref="Leases"/>).</summary>
    public int LiveLeasesOf(PeerId requester)
    {
        if (!_liveByRequester.TryGetValue(requester, out var live))
        {
            return 0;
        }
        live.RemoveAll(static l => l.FinishedAt is not null);
        if (live.Count == 0)
        {
            _liveByRequester.Remove(requester);
        }
        return live.Count;
    }

    /// <summary>Routes a message from <paramref name="requester"/> (the key the secure channel authenticated).</summary>
    /// <param name="stranger">
    /// For a new request: the requester has no standing here (a stranger or a debtor), so it is served only within
    /// <see cref="ProviderCapacity.StrangerCores"/>, and preemptibly; one in good standing that finds no free core takes
    /// the newest such lease's.
    /// </param>
    public ProviderDispatch Handle(PublicKey requester, LeaseMessage message, DateTimeOffset now, bool stranger = false)
    {
        var peer = requester.ToPeerId();
        var key = (peer, message.RequestId);
        if (_leases.TryGetValue(key, out var lease))
        {
            return new ProviderDispatch(lease, lease.Handle(message, now));
        }
        if (_rejected.TryGetValue(key, out var remembered) && message is LeaseRequest again)
        {
            return new ProviderDispatch(null, new LeaseStep
            {
                Send = [again.SameWork(remembered.Request) ? remembered.Reject : Reject(again, LeaseRejectReason.BadRequest, "request id reused for different work")],
            });
        }
        return message switch
        {
            LeaseRequest request => OnRequest(requester, peer, request, now, stranger),
            LeaseAccept or LeaseData or LeaseHeartbeat => new ProviderDispatch(null, new LeaseStep
            {
                Send = [new LeaseCancel { RequestId = message.RequestId, Reason = "unknown lease" }],
            }),
            _ => new ProviderDispatch(null, LeaseStep.Nothing),
        };
    }

    /// <summary>
    /// Forgets rejections older than the retention, and finished leases older than the retention whose deadline has
    /// passed (after which a retried request is refused as too late, so it can never start a second lease).
    /// Returns how many were forgotten.
    /// </summary>
    public int Prune(DateTimeOffset now)
    {
        var cutoff = now - _options.FinishedRetention;
        var nowMs = now.ToUnixTimeMilliseconds();
        var leases = _leases.Where(kv => kv.Value.FinishedAt is { } at && at <= cutoff && kv.Value.Terms.DeadlineUnixMs <= nowMs)
            .Select(kv => kv.Key).ToList();
        var rejects = _rejected.Where(kv => kv.Value.At <= cutoff).Select(kv => kv.Key).ToList();
        leases.ForEach(k => _leases.Remove(k));
        rejects.ForEach(k => _rejected.Remove(k));
        foreach (var requester in _liveByRequester.Keys.ToList())
        {
            LiveLeasesOf(requester); // drops finished leases, and requesters with none left
        }
        return leases.Count + rejects.Count;
    }

    private ProviderDispatch OnRequest(PublicKey requesterKey, PeerId requester, LeaseRequest request, DateTimeOffset now, bool stranger)
    {
        if (TrackedCount >= _options.MaxTrackedLeases && !MakeRoom(now))
        {
            return new ProviderDispatch(null, new LeaseStep { Send = [Reject(request, LeaseRejectReason.Busy, "too many requests tracked")] });
        }
        if (Evaluate(request, now) is { } reject)
        {
            _rejected[(requester, request.RequestId)] = (request, reject, now);
            return new ProviderDispatch(null, new LeaseStep { Send = [reject] });
        }
        // Room on disk for the module (or the module kept, when held here) from the offer to the end of the lease.
        if (_modules.TryHold(request.ModuleHash, request.ModuleSize) is not { } hold)
        {
            RefusedForDisk++;
            return new ProviderDispatch(null, new LeaseStep
            {
                Send = [Reject(request, LeaseRejectReason.Busy, $"disk full: the modules of leases in progress fill the {_modules.DiskLimitBytes} bytes offered (compute:provider:diskBytes)")],
            });
        }
        List<(ProviderLease, LeaseStep)> preempted = [];
        if (!Capacity.TryReserve(request.MemoryLimitBytes, stranger, out var reservation)
            && (stranger || !Preempt(request.MemoryLimitBytes, now, preempted) || !Capacity.TryReserve(request.MemoryLimitBytes, stranger, out reservation)))
        {
            hold.Release.Dispose();
            var detail = Capacity.PausedBecause is { } paused ? $"paused: {paused}"
                : stranger && Capacity.StrangerCoresInUse >= Capacity.StrangerCores && Capacity.AvailableCores > 0
                    ? $"the {Capacity.StrangerCores} core(s) offered to requesters without standing are in use"
                : Capacity.AvailableCores == 0 ? $"all {Capacity.Cores} cores in use" : "not enough free memory";
            return new ProviderDispatch(null, new LeaseStep { Send = [Reject(request, LeaseRejectReason.Busy, detail)] });
        }
        // The deadline follows from the fuel asked for and this provider's speed: a tiny task cannot hold a core for a day.
        var deadline = DateTimeOffset.FromUnixTimeMilliseconds(request.DeadlineUnixMs);
        var latest = LatestDeadline(request, now);
        deadline = deadline < latest ? deadline : DateTimeOffset.FromUnixTimeMilliseconds(latest.ToUnixTimeMilliseconds());
        var offerExpires = now + _options.OfferTimeout;
        var terms = new LeaseTerms
        {
            RequestId = request.RequestId,
            Provider = _key.PeerId.ToBytes(),
            Requester = requester.ToBytes(),
            ModuleHash = request.ModuleHash,
            ModuleSize = request.ModuleSize,
            InputHash = request.InputHash,
            InputSize = request.InputSize,
            FuelLimit = request.FuelLimit,
            MemoryLimitBytes = request.MemoryLimitBytes,
            DeadlineUnixMs = deadline.ToUnixTimeMilliseconds(),
            PricePerMegaFuel = _policy.PricePerMegaFuel,
            HeartbeatIntervalMs = (long)_options.HeartbeatInterval.TotalMilliseconds,
            ModuleNeeded = !hold.Held,
            OfferExpiresUnixMs = (offerExpires < deadline ? offerExpires : deadline).ToUnixTimeMilliseconds(),
            RuntimeVersion = _policy.RuntimeVersion,
            AuditCommitment = request.AuditCommitment,
            AuditRatePpm = request.AuditRatePpm,
            DebitNoteFuel = DebitNoteSlicing.SliceFor(request, _options),
        };
        var lease = new ProviderLease(_key, requesterKey, request, terms, reservation, _options, now, hold.Release);
        _leases[(requester, request.RequestId)] = lease;
        if (!_liveByRequester.TryGetValue(requester, out var live))
        {
            _liveByRequester[requester] = live = [];
        }
        live.Add(lease);
        return new ProviderDispatch(lease, lease.Start()) { Preempted = preempted };
    }

    /// <summary>
    /// Ends the newest live leases of requesters without standing until a core and <paramref name="memoryBytes"/> are free,
    /// when that is possible at all (otherwise ends none). Their requesters are told, and retry elsewhere; nothing ran to
    /// completion, so nothing is owed.
    /// </summary>
    private bool Preempt(long memoryBytes, DateTimeOffset now, List<(ProviderLease, LeaseStep)> preempted)
    {
        if (Capacity.PausedBecause is not null || memoryBytes > Capacity.MemoryBytes)
        {
            return false;
        }
        var candidates = _leases.Values.Where(l => !l.IsFinished && l.Stranger).Reverse().ToList();
        var cores = Capacity.Cores - Capacity.CoresInUse;
        var memory = Capacity.MemoryBytes - Capacity.MemoryInUse;
        var take = 0;
        while ((cores < 1 || memory < memoryBytes) && take < candidates.Count)
        {
            cores++;
            memory += candidates[take].MemoryBytes;
            take++;
        }
        if (cores < 1 || memory < memoryBytes || take == 0)
        {
            return false;
        }
        foreach (var lease in candidates.Take(take))
        {
            preempted.Add((lease, lease.Cancel("preempted by a requester in good standing (strangers are served from idle capacity)", now)));
        }
        return true;
    }

    private LeaseReject? Evaluate(LeaseRequest r, DateTimeOffset now)
    {
        if (!LeaseCodec.IsHash(r.ModuleHash) || !LeaseCodec.IsHash(r.InputHash) || r.ModuleSize <= 0 || r.InputSize < 0
            || r.FuelLimit <= 0 || r.MemoryLimitBytes < 0)
        {
            return Reject(r, LeaseRejectReason.BadRequest, "malformed request");
        }
        var deadline = r.DeadlineUnixMs;
        if (deadline < (now + _policy.MinDeadlineLead).ToUnixTimeMilliseconds())
        {
            return Reject(r, LeaseRejectReason.Policy, "deadline too soon");
        }
        if (deadline > (now + _policy.MaxDeadlineLead).ToUnixTimeMilliseconds())
        {
            return Reject(r, LeaseRejectReason.Policy, "deadline too far away");
        }
        if (r.FuelLimit > _policy.MaxFuel)
        {
            return Reject(r, LeaseRejectReason.Policy, $"fuel limit over {_policy.MaxFuel}");
        }
        if (DebitNoteSlicing.RefusesUnsliced(r, _options) is { } unsliced)
        {
            return Reject(r, LeaseRejectReason.Policy, unsliced);
        }
        if (r.MemoryLimitBytes > _policy.MaxMemoryBytes || r.MemoryLimitBytes > Capacity.MemoryBytes)
        {
            return Reject(r, LeaseRejectReason.Policy, "memory limit over what is offered");
        }
        if (r.ModuleSize > _options.MaxModuleBytes || r.InputSize > _options.MaxInputBytes)
        {
            return Reject(r, LeaseRejectReason.Policy, "module or input too large");
        }
        if (r.MaxPricePerMegaFuel < _policy.PricePerMegaFuel)
        {
            return Reject(r, LeaseRejectReason.Price, $"price is {_policy.PricePerMegaFuel} per million fuel");
        }
        if (!_policy.AcceptUnknownModules && !_modules.Contains(r.ModuleHash))
        {
            return Reject(r, LeaseRejectReason.UnknownModule, "module not held here");
        }
        if (r.ModuleSize > _modules.DiskLimitBytes && !_modules.Contains(r.ModuleHash))
        {
            RefusedForDisk++;
            return Reject(r, LeaseRejectReason.Policy, $"disk full: the module's {r.ModuleSize} bytes are more than the {_modules.DiskLimitBytes} bytes offered (compute:provider:diskBytes)");
        }
        return null;
    }

    /// <summary>
    /// Evicts the oldest remembered request (finished lease or rejection, a rejection first on a tie); false when
    /// everything tracked is live. The candidates are pruned and sorted once into <see cref="_evictionOrder"/> and
    /// taken from its head on later calls, so a provider at the limit does not sort all it tracks for every request:
    /// whatever finishes or is rejected after the sort is newer than everything in it (time only moves forward), so
    /// the head stays the oldest until the queue is used up; entries gone or changed since are skipped.
    /// </summary>
    private bool MakeRoom(DateTimeOffset now)
    {
        while (TrackedCount >= _options.MaxTrackedLeases)
        {
            if (_evictionOrder.Count == 0)
            {
                Prune(now);
                if (TrackedCount < _options.MaxTrackedLeases)
                {
                    return true;
                }
                var candidates = _rejected.Select(kv => (Key: kv.Key, At: kv.Value.At, Rejected: true))
                    .Concat(_leases.Where(kv => kv.Value.FinishedAt is not null).Select(kv => (Key: kv.Key, At: kv.Value.FinishedAt!.Value, Rejected: false)))
                    .OrderBy(c => c.At).ThenBy(c => c.Rejected ? 0 : 1);
                foreach (var c in candidates)
                {
                    _evictionOrder.Enqueue(c);
                }
                if (_evictionOrder.Count == 0)
                {
                    return false;
                }
            }
            var (key, at, rejected) = _evictionOrder.Dequeue();
            if (rejected)
            {
                if (_rejected.TryGetValue(key, out var r) && r.At == at)
                {
                    _rejected.Remove(key);
                }
            }
            else if (_leases.TryGetValue(key, out var lease) && lease.FinishedAt == at)
            {
                _leases.Remove(key);
            }
        }
        return true;
    }

    private static LeaseReject Reject(LeaseRequest r, LeaseRejectReason reason, string detail) =>
        new() { RequestId = r.RequestId, Reason = reason, Detail = detail };
}
