using System.Security.Cryptography;
using Microsoft.Extensions.Logging;
using Potluck.Protocol;
using Potluck.Protocol.Framing;
using Potluck.Protocol.Host;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Identity;
using Potluck.Scheduler.Advertising;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Execution;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Metrics;
using Potluck.Scheduler.Topics;
using Potluck.Scheduler.Verification;

namespace Potluck.Scheduler.Providing;

/// <summary>
/// The provider's shell over the host: serves <see cref="LeaseProtocol.Id"/> and <see cref="LeaseProtocol.IdWithReceipts"/>
/// (any number of leases per stream, each message routed by request id; feeding every message to the pure
/// <see cref="ProviderLeaseRegistry"/> / <see cref="ProviderLease"/> under one lock, with timers on the injected
/// <see cref="TimeProvider"/>), runs what they ask through the <see cref="ITaskExecutor"/>, signs an
/// <see cref="Attestation"/> of every result, takes receipts on <see cref="ReceiptProtocol.Id"/> and on lease streams
/// (recording each as Earned in the <see cref="CreditLedger"/> before acknowledging it), and publishes signed advertisements on
/// <see cref="AdvertisementProtocol.Topic"/> at the interval and whenever capacity changes. Capacity is held from
/// offer to end (<see cref="ProviderCapacity"/>), so it never runs more leases at once than it advertises.
/// </summary>
public sealed partial class ProviderService : IAsyncDisposable
{
    private readonly IHost _host;
    private readonly PrivateKey _key;
    private readonly ITopicBus _bus;
    private readonly ITaskExecutor _executor;
    private readonly CreditLedger _ledger;
    private readonly ProviderOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger<ProviderService> _log;
    private readonly Lock _gate = new();
    private readonly ProviderLeaseRegistry _registry;
    private readonly Dictionary<ProviderLease, Slot> _slots = [];
    private readonly Dictionary<(PeerId, ulong), RememberedResult> _results = [];
    private readonly Queue<(PeerId, ulong)> _resultOrder = new();
    private readonly AdvertisementIssuer _issuer;
    private readonly Lock _adGate = new();
    private readonly BackgroundWork _work;
    private ITimer? _adTimer;
    private byte[]? _lastAdvertisement;
    private DateTimeOffset _lastPrune;
    private readonly ComputeInstruments _instruments;
    private int _disposed;
    private long _refusedUnpaid;
    private long _refusedOverLimit;
    private long _auditViolations;
    private long _preempted;
    private readonly ReceiptLoad _receiptLoad = new();
    private readonly Dictionary<PeerId, RequesterReceipts> _receipts = [];
    private readonly Lock _receiptsGate = new();

    /// <param name="instruments">The node's metrics; null counts into instruments of the service's own.</param>
    public ProviderService(IHost host, PrivateKey key, ITopicBus bus, ITaskExecutor executor, IModuleCache modules, CreditLedger ledger,
        ProviderOptions options, NodeRuntime runtime, ILogger<ProviderService> log, ComputeInstruments? instruments = null)
    {
        _instruments = instruments ?? ComputeInstruments.Detached();
        _host = host;
        _key = key;
        _bus = bus;
        _executor = executor;
        _ledger = ledger;
        _options = options;
        _time = runtime.Time;
        _log = log;
        _work = runtime.CreateBackgroundWork("provider", log);
        Capacity = new ProviderCapacity(options.Cores, options.MemoryBytes) { StrangerCores = StrangerCores(options.Cores) };
        var policy = new ProviderPolicy
        {
            PricePerMegaFuel = options.PricePerMegaFuel,
            MaxFuel = options.MaxFuel,
            MaxMemoryBytes = options.MaxMemoryPerLease,
            AcceptUnknownModules = options.AcceptUnknownModules,
            RuntimeVersion = ComputeRuntime.Version,
            SpeedFuelPerSecond = options.SpeedFuelPerSecond,
            DeadlineSlack = options.DeadlineSlack,
            MinRunTime = options.MinRunTime,
        };
        _registry = new ProviderLeaseRegistry(key, policy, Capacity, modules, options.Lease);
        _issuer = new AdvertisementIssuer(key, options.Advertising);
    }

    /// <summary>Cores and memory in use; <see cref="ProviderCapacity.PeakCoresInUse"/> never exceeds the advertised cores.</summary>
    public ProviderCapacity Capacity { get; }

    /// <summary>Advertisements this provider issued, by reason (<see cref="IssuerCounts.Names"/>' order; a copy).</summary>
    public long[] PublicationCounts() => _issuer.Counts.ToArray();

    /// <summary>Requesters this provider serves no new lease (a fork proof is held against them); checked under the lock, so quick.</summary>
    public Func<PeerId, bool>? RefuseRequester { get; set; }

    /// <summary>Whether a requester without first-hand standing proved standing with its own chain (a cached verdict; quick).</summary>
    public Func<PeerId, bool>? HasVerifiedStanding { get; set; }

    /// <summary>Raised (outside the lock) when a lease ends, with its outcome.</summary>
    public event Action<PeerId, ulong, LeaseOutcome>? LeaseEnded;

    /// <summary>Raised when the executor is handed a task (tests wait on it to act mid-task).</summary>
    public event Action<PeerId, ulong>? ExecutionStarted;

    /// <summary>Registers the protocol handlers and publishes the first advertisement.</summary>
    public void Start()
    {
        _host.SetStreamHandler(LeaseProtocol.Id, HandleLeaseStreamAsync);
        _host.SetStreamHandler(LeaseProtocol.IdWithReceipts, HandleLeaseStreamAsync);
        _host.SetStreamHandler(ReceiptProtocol.Id, HandleReceiptStreamAsync);
        _host.SetStreamHandler(AdvertisementProtocol.FetchProtocolId, HandleAdvertisementFetchAsync);
        _adTimer = _time.CreateTimer(static s => ((ProviderService)s!).QueuePoll(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        QueuePoll();
    }

    /// <summary>
    /// Polls the issuer in the background after a change here (capacity, pause, size), unless a change is pending already
    /// inside <see cref="AdvertisementOptions.MinPublishGap"/> (<see cref="AdvertisementIssuer.QuietUntil"/>): no poll before
    /// then could publish, and the timer is armed for the gap's end, whose poll reads the state as it is then. Otherwise every
    /// lease's start and end would cost a thread-pool item, an advertisement and its encoding for nothing.
    /// </summary>
    private void PublishSoon()
    {
        if (_time.GetUtcNow().UtcTicks < Volatile.Read(ref _quietUntilTicks))
        {
            return;
        }
        QueuePoll();
    }

    /// <summary>
    /// <see cref="PublishSoon"/> after a lease started or ended, which changes the free cores and nothing else: also skipped
    /// while a load-only change waits for <see cref="AdvertisementOptions.LoadChangeGap"/>
    /// (<see cref="AdvertisementIssuer.LoadQuietUntil"/>, the timer armed for its end) and the provider is as busy or as free
    /// as it last published, since no poll could publish before then. Going busy or free again still polls at once. Read
    /// after the caller's change left the lock, so the free cores seen include it (a later change polls on its own).
    /// </summary>
    private void PublishSoonAfterLease()
    {
        var now = _time.GetUtcNow().UtcTicks;
        if (now < Volatile.Read(ref _loadQuietUntilTicks) && Capacity.AvailableCores > 0 == Volatile.Read(ref _publishedFree))
        {
            return;
        }
        PublishSoon();
    }

    /// <summary>
    /// Polls the issuer in the background; while one poll is queued and not yet started, another is not queued (the
    /// queued one reads the state as it is when it runs). The timer always polls.
    /// </summary>
    private void QueuePoll()
    {
        if (Interlocked.Exchange(ref _publishQueued, 1) == 0)
        {
            _work.Run("advertise", () =>
            {
                Volatile.Write(ref _publishQueued, 0);
                return PublishAdvertisementAsync();
            });
        }
    }

    private int _publishQueued;

    /// <summary>While a change waits for the end of the publishing gap: <see cref="AdvertisementIssuer.QuietUntil"/> in UTC ticks; else 0.</summary>
    private long _quietUntilTicks;

    /// <summary>While a load-only change waits for the load gap: <see cref="AdvertisementIssuer.LoadQuietUntil"/> in UTC ticks; else 0.</summary>
    private long _loadQuietUntilTicks;

    /// <summary><see cref="AdvertisementIssuer.PublishedFree"/> as of the last poll (false before the first).</summary>
    private bool _publishedFree;

    /// <summary>Polls of the issuer so far (tests: a lease's start and end inside the load gap costs none).</summary>
    internal long AdvertisementPolls => Interlocked.Read(ref _advertisementPolls);

    private long _advertisementPolls;

    private CancellationToken Stopping => _work.Stopping;

    /// <summary>Polls the issuer now: publishes when the content changed or the interval passed, and re-arms the timer.</summary>
    public async Task PublishAdvertisementAsync()
    {
        if (_disposed != 0)
        {
            return;
        }
        byte[]? envelope;
        lock (_adGate)
        {
            var now = _time.GetUtcNow();
            Interlocked.Increment(ref _advertisementPolls);
            envelope = _issuer.Poll(CurrentAdvertisement(), now);
            _lastAdvertisement = envelope ?? _lastAdvertisement;
            var next = _issuer.NextPublishAt - now;
            _adTimer?.Change(next < TimeSpan.Zero ? TimeSpan.Zero : next, Timeout.InfiniteTimeSpan);
            Volatile.Write(ref _publishedFree, _issuer.PublishedFree == true);
            Volatile.Write(ref _loadQuietUntilTicks, _adTimer is not null ? _issuer.LoadQuietUntil.UtcTicks : 0);
            Volatile.Write(ref _quietUntilTicks, _adTimer is not null ? _issuer.QuietUntil.UtcTicks : 0);
        }
        if (envelope is not null)
        {
            try
            {
                await _bus.PublishAsync(AdvertisementProtocol.Topic, envelope, Stopping);
            }
            catch (Exception e) when (Failures.IsExpected(e, Stopping))
            {
                LogPublishFailed(_log, e.Message);
            }
        }
    }

    /// <summary>Answers <see cref="AdvertisementProtocol.FetchProtocolId"/> with the last advertisement published.</summary>
    private async Task HandleAdvertisementFetchAsync(IStream stream, CancellationToken ct)
    {
        byte[]? envelope;
        lock (_adGate)
        {
            envelope = _lastAdvertisement;
        }
        if (envelope is not null)
        {
            await LengthPrefixed.WriteAsync(stream.Output, envelope, ct);
        }
        await stream.Output.CompleteAsync();
    }

    private Advertisement CurrentAdvertisement()
    {
        int available, cores;
        long memory;
        lock (_gate)
        {
            available = Capacity.AvailableCores;
            cores = Capacity.Cores;
            memory = Capacity.MemoryBytes;
        }
        var addresses = _host.ListenAddresses.Take(_options.Advertising.MaxListenAddresses).Select(a => a.ToBytes()).ToArray();
        var policy = ProviderPolicyFlags.Attests | ProviderPolicyFlags.Deterministic
            | (_options.AcceptUnknownModules ? ProviderPolicyFlags.AcceptsUnknownModules : ProviderPolicyFlags.None);
        return new Advertisement
        {
            ListenAddresses = addresses,
            Cores = cores,
            AvailableCores = available,
            MemoryBytes = memory,
            SpeedFuelPerSecond = _options.SpeedFuelPerSecond,
            PricePerMegaFuel = _options.PricePerMegaFuel,
            RuntimeVersion = ComputeRuntime.Version,
            Policy = policy,
        };
    }

    // ------------------------------------------------------------------ the operator's controls

    /// <summary>
    /// Stops taking new leases (refused as busy with <paramref name="reason"/>, advertised with no free core); with
    /// <paramref name="cancelRunning"/> every live lease is also ended now, cleanly: the requester is told, the task is
    /// stopped, nothing is attested, so nothing is paid or owed. Returns the leases cancelled.
    /// </summary>
    public int Pause(string reason, bool cancelRunning)
    {
        ArgumentException.ThrowIfNullOrEmpty(reason);
        var cancelled = 0;
        Action? after = null;
        lock (_gate)
        {
            Capacity.Pause(reason);
            if (cancelRunning)
            {
                var now = _time.GetUtcNow();
                foreach (var (lease, slot) in _slots.ToList())
                {
                    var step = lease.Cancel(reason, now);
                    if (step.Outcome is not null)
                    {
                        slot.Run?.Cancel();
                        after += Apply(lease, slot, step, now);
                        cancelled++;
                    }
                }
            }
        }
        after?.Invoke();
        PublishSoon();
        return cancelled;
    }

    /// <summary>Takes new leases again.</summary>
    public void Resume()
    {
        lock (_gate)
        {
            Capacity.Pause(null);
        }
        PublishSoon();
    }

    /// <summary>Offers other cores and memory from now on (leases held keep theirs); advertised at once.</summary>
    public void Resize(int cores, long memoryBytes)
    {
        lock (_gate)
        {
            Capacity.Resize(cores, memoryBytes);
            Capacity.StrangerCores = StrangerCores(cores);
        }
        PublishSoon();
    }

    /// <summary>The leases held now, for `potluck leases`.</summary>
    public IReadOnlyList<ProviderLeaseView> Leases()
    {
        lock (_gate)
        {
            return _slots.Keys
                .Select(l => new ProviderLeaseView(l.RequestId, l.Requester, l.IsRunning, l.Terms.FuelLimit, l.Terms.MemoryLimitBytes,
                    l.Terms.PricePerMegaFuel, DateTimeOffset.FromUnixTimeMilliseconds(l.Terms.DeadlineUnixMs)))
                .OrderBy(v => v.RequestId)
                .ToArray();
        }
    }

    // ------------------------------------------------------------------ leases

    private async Task HandleLeaseStreamAsync(IStream stream, CancellationToken hostToken)
    {
        // A requester keeps its lease stream open across leases: it must end when this service does, not only the host.
        using var linked = _work.Link(hostToken);
        var ct = linked.Token;
        var session = new LeaseSession(stream, _options.MaxQueuedMessages, _work);
        var requester = stream.Connection.RemotePublicKey;
        var receipts = OpenReceipts(stream.RemotePeer);
        try
        {
            while (!ct.IsCancellationRequested)
            {
                var body = await FrameReader.ReadAsync(stream.Input, _options.Lease.MaxFrameBytes, LeaseProtocol.Id, ct);
                if (body is null)
                {
                    break;
                }
                if (LeaseCodec.TryDeserialize(body, _options.Lease, out var message) != DecodeStatus.Done)
                {
                    throw new ProtocolViolationException(LeaseProtocol.Id, "malformed lease message");
                }
                Metrics.LeaseTimeline.Message(message!, sent: false, provider: true);
                if (message is LeaseReceipt receipt)
                {
                    // Recorded off the read loop, one at a time in arrival order; a flood waits here, not in more tasks.
                    await receipts.EnqueueAsync(receipt, session, ct);
                    continue;
                }
                if (message is LeaseRequest request && !_host.Budgets.TryTake(stream.RemotePeer, PeerBudgets.LeaseRequests))
                {
                    // Over its budget (host:budgets:leaseRequests): refused before any work, as a busy provider refuses.
                    session.Enqueue([new LeaseReject { RequestId = request.RequestId, Reason = LeaseRejectReason.Busy, Detail = "over the lease request budget" }]);
                    continue;
                }
                Dispatch(requester, message!, session);
                if (message is LeaseRequest)
                {
                    Metrics.LeaseTimeline.Mark(message.RequestId, Metrics.LeaseMark.Admitted);
                }
            }
        }
        catch (ProtocolViolationException e)
        {
            LogViolation(_log, stream.RemotePeer, e.Message);
            _host.Budgets.Penalise(stream.RemotePeer, Misbehaviour.Malformed);
            stream.Reset();
        }
        catch (Exception e) when (Failures.IsExpected(e, ct))
        {
            // The requester went away; its leases end by their own timers.
        }
        finally
        {
            CloseReceipts(stream.RemotePeer, receipts);
            session.Close();
            await session.Writer;
        }
    }

    private void Dispatch(PublicKey requester, LeaseMessage message, LeaseSession session)
    {
        var capacityChanged = false;
        Action? after;
        lock (_gate)
        {
            var now = _time.GetUtcNow();
            if (now - _lastPrune >= _options.Lease.FinishedRetention / 4)
            {
                _lastPrune = now;
                _registry.Prune(now);
            }
            var before = Capacity.CoresInUse;
            var stranger = false;
            if (message is LeaseRequest request && Refusal(requester.ToPeerId(), request, out stranger) is { } refusal)
            {
                session.Enqueue([refusal]);
                return;
            }
            var refusedForDisk = _registry.RefusedForDisk;
            var dispatch = _registry.Handle(requester, message, now, stranger);
            if (_registry.RefusedForDisk != refusedForDisk)
            {
                _instruments.LeaseRefused("disk_full");
            }
            var (lease, step) = dispatch;
            after = null;
            foreach (var (preempted, cancel) in dispatch.Preempted)
            {
                if (_slots.TryGetValue(preempted, out var preemptedSlot))
                {
                    Interlocked.Increment(ref _preempted);
                    _instruments.LeaseRefused("preempted");
                    after += Apply(preempted, preemptedSlot, cancel, now);
                }
            }
            if (lease is null || (lease.FinishedAt is not null && step.Outcome is null && !_slots.ContainsKey(lease)))
            {
                // No lease, or one that ended before (a late or repeated message): answer it, but keep no slot for it.
                session.Enqueue(step.Send);
                return;
            }
            var slot = SlotOf(lease);
            slot.Session = session;
            after += Apply(lease, slot, step, now);
            capacityChanged = Capacity.CoresInUse != before;
        }
        after?.Invoke();
        if (capacityChanged)
        {
            PublishSoonAfterLease();
        }
    }

    /// <summary>
    /// A new request from a requester that owes beyond <see cref="ProviderOptions.CreditLimitPerRequester"/>, or that holds
    /// <see cref="ProviderOptions.MaxLeasesPerRequester"/> leases here already, is refused (a retry of a request already
    /// leased is not: the registry answers it). Under the lock.
    /// </summary>
    /// <param name="stranger">
    /// Set when the requester has no standing here: it has supplied this node no work, or has taken more than it supplied
    /// (a debtor). Such requesters are served only within <see cref="ProviderOptions.StrangerCoreShare"/> of the cores, and
    /// preemptibly, so that contributors in good standing are never crowded out.
    /// </param>
    private LeaseReject? Refusal(PeerId requester, LeaseRequest request, out bool stranger)
    {
        stranger = false;
        if (_registry.Find(requester, request.RequestId) is not null)
        {
            return null;
        }
        var held = _registry.LiveLeasesOf(requester);
        if (held >= _options.MaxLeasesPerRequester)
        {
            Interlocked.Increment(ref _refusedOverLimit);
            _instruments.LeaseRefused("over_limit");
            return new LeaseReject
            {
                RequestId = request.RequestId,
                Reason = LeaseRejectReason.Busy,
                Detail = $"{held} leases held here already (at most {_options.MaxLeasesPerRequester} per requester)",
                LeaseLimit = _options.MaxLeasesPerRequester,
            };
        }
        if (RefuseRequester?.Invoke(requester) == true)
        {
            _instruments.LeaseRefused("refused");
            return new LeaseReject { RequestId = request.RequestId, Reason = LeaseRejectReason.Policy, Detail = "this provider refuses you (it holds a fork proof against you)" };
        }
        var record = _ledger.Requester(requester);
        // Standing here first-hand, or (paying as it goes here) verified standing in its own chain (TrustChainService.History.cs).
        stranger = ProviderAccounts.IsStranger(requester, record, HasVerifiedStanding);
        if (record.Violations > 0)
        {
            _instruments.LeaseRefused("audit");
            return new LeaseReject { RequestId = request.RequestId, Reason = LeaseRejectReason.Policy, Detail = $"broke its audit commitment on {record.Violations} lease(s)" };
        }
        // Receipts from a requester are only as good as what it gave: credit is what it took here beyond what it supplied
        // here, paid or not, and is bounded by the credit limit (nobody mints credit by paying with receipts it cannot back).
        var creditLimit = CreditLimitFor(requester, record); // a stranger's, or more from a verified history (ProviderService.Credit.cs)
        if (ProviderAccounts.OverCredit(record, creditLimit) is { } overCredit)
        {
            Interlocked.Increment(ref _refusedUnpaid);
            _instruments.LeaseRefused("unpaid");
            return new LeaseReject { RequestId = request.RequestId, Reason = LeaseRejectReason.Policy, Detail = overCredit };
        }
        return null;
    }

    /// <summary>Cores requesters without standing may hold at once: the share of <paramref name="cores"/>, at least one unless the share is 0.</summary>
    private int StrangerCores(int cores) =>
        _options.StrangerCoreShare >= 1 ? cores
        : _options.StrangerCoreShare <= 0 ? 0
        : Math.Max(1, (int)Math.Floor(cores * _options.StrangerCoreShare));

    /// <summary>Requests refused because their requester owed more than the credit limit.</summary>
    public long RefusedUnpaid => Interlocked.Read(ref _refusedUnpaid);

    /// <summary>Requests refused for want of disk (compute:provider:diskBytes).</summary>
    public long RefusedForDisk
    {
        get
        {
            lock (_gate)
            {
                return _registry.RefusedForDisk;
            }
        }
    }

    /// <summary>Leases of requesters without standing ended to make room for one in good standing.</summary>
    public long Preempted => Interlocked.Read(ref _preempted);

    /// <summary>Requests refused because their requester held the most leases allowed at once.</summary>
    public long RefusedOverLimit => Interlocked.Read(ref _refusedOverLimit);

    private Slot SlotOf(ProviderLease lease)
    {
        if (!_slots.TryGetValue(lease, out var slot))
        {
            _slots[lease] = slot = new Slot(this, lease);
            _instruments.LeaseStarted(LeaseRole.Provider);
        }
        return slot;
    }

    /// <summary>
    /// Carries out a step's bookkeeping under the lock (the lease's slot, its run) and queues the step, in the order the core
    /// decided it, in the lease's shell (<see cref="Slot"/>: sends, the timer, the end); returns what must run after the lock
    /// is released (the shell's loop).
    /// </summary>
    private Action? Apply(ProviderLease lease, Slot slot, LeaseStep step, DateTimeOffset now)
    {
        Bookkeep(lease, slot, step);
        return Queue(lease, slot, step, now);
    }

    private void Bookkeep(ProviderLease lease, Slot slot, LeaseStep step)
    {
        if (step.Execute is { } execution && slot.Run is null)
        {
            // Linked to the provider's stop without a registration on it, and disposed when the lease ends (below): an
            // undisposed linked source stayed registered on the node-lifetime token, one per lease ever run.
            slot.Run = _work.Link(default);
            var token = slot.Run.Token;
            Metrics.LeaseTimeline.Mark(lease.RequestId, Metrics.LeaseMark.RunQueued);
            _work.Run($"lease {lease.RequestId}", () => RunAsync(lease, execution, token));
        }
        if (step.AbortExecution)
        {
            slot.Run?.Cancel();
        }
        if (step.Outcome is not null)
        {
            _slots.Remove(lease);
            EndDebitNotes(lease);
            // The lease is over: its run, if any is still going, has nothing left to deliver. Nothing cancels it after this
            // (every other canceller finds the slot in _slots, under the same lock).
            if (slot.Run is { } run)
            {
                run.Cancel();
                run.Dispose();
            }
        }
    }

    /// <summary>The provider's stop token (tests: what stays registered on it).</summary>
    internal CancellationToken StopToken => Stopping;

    /// <summary>Operations linked to the provider's stop and not yet disposed (tests and diagnostics).</summary>
    internal int LinkedOperations => _work.Linked;

    private async Task RunAsync(ProviderLease lease, LeaseExecution execution, CancellationToken ct)
    {
        ExecutionReport report;
        Metrics.LeaseTimeline.Mark(lease.RequestId, Metrics.LeaseMark.RunStarted);
        var started = _time.GetTimestamp();
        try
        {
            report = await _executor.ExecuteAsync(WithDebitNotes(lease, execution), ct);
            MeasureSpeed(report.FuelUsed, _time.GetElapsedTime(started));
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            return;
        }
        catch (Exception e)
        {
            LogExecutorFailed(_log, lease.RequestId, e);
            report = new ExecutionReport(ExecutionStatus.InvalidModule, 0, 0, ReadOnlyMemory<byte>.Empty);
        }
        Metrics.LeaseTimeline.Mark(lease.RequestId, Metrics.LeaseMark.RunFinished);
        var attestation = Attest(lease, report);
        // What the requester owes is on disk before the result leaves: only a receipt for a lease recorded here is ever
        // accepted, and unpaid leases count against the requester's credit limit. A wall-clock timeout is owed nothing.
        var leaseId = ExecutionMapping.LeaseId(lease.RequestId);
        var paidByNotes = PaidByNotes(lease); // debit notes paid the rest
        var owes = attestation.Attestation.Outcome != AttestedOutcome.TimedOut
            && Receipt.TryComputeAmount(attestation.Attestation.FuelUsed, (ulong)Math.Max(0, lease.Terms.PricePerMegaFuel), out var amount)
            && _ledger.RecordOwed(leaseId, lease.Requester, Math.Max(0, amount - paidByNotes)) == LedgerResult.Owed;
        Metrics.LeaseTimeline.Mark(lease.RequestId, Metrics.LeaseMark.OwedRecorded);
        Action? after;
        bool completed;
        lock (_gate)
        {
            if (!_slots.TryGetValue(lease, out var slot))
            {
                completed = false;
                after = null;
            }
            else
            {
                var now = _time.GetUtcNow();
                var step = lease.OnExecutionCompleted(report with { Attestation = attestation.EnvelopeBytes }, now);
                completed = step.Outcome?.Kind == LeaseOutcomeKind.Completed;
                if (completed)
                {
                    Remember(lease.Requester, lease.RequestId, new RememberedResult(attestation, lease.Terms.PricePerMegaFuel,
                        lease.Terms.AuditCommitment, lease.Terms.AuditRatePpm, paidByNotes));
                }
                after = Apply(lease, slot, step, now);
            }
        }
        if (owes && !completed)
        {
            _ledger.ForgetOwed(leaseId, lease.Requester); // no result was delivered: nothing is owed
        }
        after?.Invoke();
    }

    /// <summary>
    /// Folds one run into the measured speed (fuel per second on one core, an exponential average) that lease deadlines
    /// follow. Runs too short to time (under 100 ms on this node's clock; all of them under virtual time) are skipped.
    /// </summary>
    private void MeasureSpeed(long fuel, TimeSpan elapsed)
    {
        if (fuel <= 0 || elapsed < TimeSpan.FromMilliseconds(100))
        {
            return;
        }
        var sample = fuel / elapsed.TotalSeconds;
        lock (_gate)
        {
            var previous = _registry.MeasuredSpeedFuelPerSecond;
            var speed = previous is { } p ? 0.8 * p + 0.2 * sample : sample;
            _registry.MeasuredSpeedFuelPerSecond = (long)Math.Clamp(speed, 1, long.MaxValue / 2);
        }
    }

    /// <summary>The speed lease deadlines follow: measured from this node's runs, else the configured one.</summary>
    public long SpeedFuelPerSecond
    {
        get
        {
            lock (_gate)
            {
                return _registry.MeasuredSpeedFuelPerSecond ?? _options.SpeedFuelPerSecond;
            }
        }
    }

    private SignedAttestation Attest(ProviderLease lease, ExecutionReport report)
    {
        var terms = lease.Terms;
        var outcome = ExecutionMapping.ToAttested(report.Status, report.ExitCode);
        var attestation = new Attestation
        {
            LeaseId = ExecutionMapping.LeaseId(lease.RequestId),
            Requester = lease.Requester.ToBytes(),
            Provider = _key.PeerId.ToBytes(),
            ModuleHash = terms.ModuleHash,
            InputHash = terms.InputHash,
            OutputHash = SHA256.HashData(report.Output.Span),
            OutputSize = report.Output.Length,
            FuelUsed = (ulong)Math.Clamp(report.FuelUsed, 0, terms.FuelLimit),
            Outcome = outcome,
            ExitCode = outcome == AttestedOutcome.Exited ? report.ExitCode : 0,
            TimestampUnixMs = _time.GetUtcNow().ToUnixTimeMilliseconds(),
        };
        return SignedAttestation.Create(attestation, _key);
    }

    private void Remember(PeerId requester, ulong requestId, RememberedResult result)
    {
        var key = (requester, requestId);
        if (_results.TryAdd(key, result))
        {
            _resultOrder.Enqueue(key);
            while (_results.Count > _options.MaxRememberedResults && _resultOrder.TryDequeue(out var old))
            {
                _results.Remove(old);
            }
        }
    }

    // ------------------------------------------------------------------ receipts

    private async Task HandleReceiptStreamAsync(IStream stream, CancellationToken ct)
    {
        try
        {
            var body = await LengthPrefixed.ReadAsync(stream.Input, _options.Credits.MaxEnvelopeBytes, ReceiptProtocol.Id, ct);
            if (body is null)
            {
                return;
            }
            var ack = RecordReceipt(body);
            _instruments.Receipt(onLeaseStream: false, ack.Status);
            await LengthPrefixed.WriteAsync(stream.Output, ReceiptProtocol.EncodeAck(ack), ct);
            await stream.Output.CompleteAsync();
        }
        catch (ProtocolViolationException e)
        {
            LogViolation(_log, stream.RemotePeer, e.Message);
            stream.Reset();
        }
    }

    /// <summary>The receipt queue <paramref name="requester"/>'s lease streams share, while any of them is open.</summary>
    private RequesterReceipts OpenReceipts(PeerId requester)
    {
        lock (_receiptsGate)
        {
            if (!_receipts.TryGetValue(requester, out var receipts))
            {
                _receipts[requester] = receipts = new RequesterReceipts(_options.MaxQueuedReceipts, AnswerReceipt, _work, _receiptLoad);
            }
            receipts.Streams++;
            return receipts;
        }
    }

    /// <summary>One of the requester's lease streams ended; with the last, its queue goes (what waits there is still answered).</summary>
    private void CloseReceipts(PeerId requester, RequesterReceipts receipts)
    {
        lock (_receiptsGate)
        {
            if (--receipts.Streams == 0)
            {
                _receipts.Remove(requester);
            }
        }
    }

    /// <summary>
    /// Receipts from lease streams read and not yet answered, over all requesters, at their most (each requester: at most
    /// <see cref="ProviderOptions.MaxQueuedReceipts"/> waiting and one being answered, and one more per further stream).
    /// </summary>
    public long PeakReceiptsPending => _receiptLoad.Peak;

    /// <summary>Receipts from lease streams read and not yet answered now.</summary>
    public long ReceiptsPending => _receiptLoad.Now;

    /// <summary>Times a lease stream's reader stopped reading until a receipt was answered (its queue was full).</summary>
    public long ReceiptsHeldBack => _receiptLoad.HeldBackCount;

    /// <summary>A receipt on the lease stream: recorded (or refused) exactly as on <see cref="ReceiptProtocol.Id"/>, answered there.</summary>
    private void AnswerReceipt(LeaseReceipt receipt, LeaseSession session)
    {
        ReceiptAck ack;
        try
        {
            ack = RecordReceipt(receipt.Envelope);
        }
        catch (LedgerException e)
        {
            // Unanswered: the requester sends it again on the receipt protocol.
            LogReceiptFailed(_log, e);
            return;
        }
        _instruments.Receipt(onLeaseStream: true, ack.Status);
        Metrics.LeaseTimeline.Mark(receipt.RequestId, Metrics.LeaseMark.ReceiptRecorded);
        session.Enqueue([new LeaseReceiptAck { RequestId = receipt.RequestId, Ack = ReceiptProtocol.EncodeAck(ack) }]);
    }

    /// <summary>Checks a receipt against the lease it pays for (when remembered) and records it as Earned.</summary>
    internal ReceiptAck RecordReceipt(byte[] envelope)
    {
        var decoded = SignedReceipt.Decode(envelope, _options.Credits);
        if (!decoded.IsValid)
        {
            return new ReceiptAck { Status = ReceiptAckStatus.Refused, Detail = decoded.Status.ToString() };
        }
        var receipt = decoded.Value!;
        RememberedResult? remembered = null;
        if (receipt.Receipt.LeaseId.Length == 8)
        {
            var requestId = System.Buffers.Binary.BinaryPrimitives.ReadUInt64BigEndian(receipt.Receipt.LeaseId);
            lock (_gate)
            {
                if (_results.TryGetValue((receipt.Requester, requestId), out var r))
                {
                    remembered = r;
                }
            }
        }
        // Decoded above, signature included: only what this lease (or the debit note it pays) owes is left to check.
        var lease = remembered is { } known
            ? ReceiptExpectation.For(known.Attestation, (ulong)Math.Max(0, known.Price)) with { PaidBefore = known.PaidBefore }
            : null;
        var (ack, result) = ProviderAccounts.Record(receipt, _key.PeerId, lease, SentNote(receipt)?.Expectation(), _ledger);
        if (result is { } written && ProviderAccounts.IsPaid(written))
        {
            DebitNotePaid(receipt);
            if (remembered is { } audited)
            {
                Audit(receipt, audited);
            }
        }
        if (result == LedgerResult.Recorded)
        {
            _instruments.CreditsEarned(receipt.Receipt.Amount);
        }
        return ack;
    }

    /// <summary>
    /// The commit-reveal audit of a paid lease (<see cref="LeaseAudit"/>): the secret the receipt reveals must match the
    /// commitment in the terms, and the requester must not claim a check its committed decision did not select. A requester
    /// that broke its commitment is recorded (with the signed receipt as evidence) and gets no new lease here.
    /// </summary>
    private void Audit(SignedReceipt receipt, RememberedResult lease)
    {
        var verdict = LeaseAudit.Verify(lease.AuditCommitment, lease.AuditRatePpm, lease.Attestation.Hash,
            receipt.Receipt.AuditSecret, receipt.Receipt.Checked);
        if (LeaseAudit.IsViolation(verdict) && _ledger.RecordViolation(receipt.Requester, receipt.Receipt.LeaseId, (int)verdict, receipt.EnvelopeBytes))
        {
            Interlocked.Increment(ref _auditViolations);
            LogAuditViolation(_log, receipt.Requester, verdict);
        }
    }

    /// <summary>Receipts whose audit showed the requester broke its commitment (a wrong secret, a check it did not declare).</summary>
    public long AuditViolations => Interlocked.Read(ref _auditViolations);

    // ------------------------------------------------------------------ shutdown

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        _host.RemoveStreamHandler(LeaseProtocol.Id);
        _host.RemoveStreamHandler(LeaseProtocol.IdWithReceipts);
        _host.RemoveStreamHandler(ReceiptProtocol.Id);
        lock (_adGate)
        {
            _adTimer?.Dispose();
        }
        lock (_gate)
        {
            var now = _time.GetUtcNow();
            foreach (var (lease, slot) in _slots.ToList())
            {
                slot.Session?.Enqueue(lease.Cancel("provider shutting down", now).Send);
                EndDebitNotes(lease);
                slot.Shell.Stop();
                slot.Run?.Cancel();
                _instruments.LeaseEnded(LeaseRole.Provider, LeaseOutcomeKind.Cancelled);
            }
            _slots.Clear();
        }
        await _work.StopAsync();
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "Lease {RequestId} from {Requester} ended: {Kind} ({Detail})")]
    private static partial void LogLeaseEnded(ILogger logger, ulong requestId, PeerId requester, LeaseOutcomeKind kind, string detail);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Protocol violation by {Peer}: {Reason}")]
    private static partial void LogViolation(ILogger logger, PeerId peer, string reason);

    [LoggerMessage(Level = LogLevel.Error, Message = "The executor failed on lease {RequestId}")]
    private static partial void LogExecutorFailed(ILogger logger, ulong requestId, Exception error);

    [LoggerMessage(Level = LogLevel.Error, Message = "A receipt on a lease stream could not be recorded")]
    private static partial void LogReceiptFailed(ILogger logger, Exception error);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Requester {Requester} broke its audit commitment ({Verdict}): refused from now on")]
    private static partial void LogAuditViolation(ILogger logger, PeerId requester, AuditVerdict verdict);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Advertisement not published: {Reason}")]
    private static partial void LogPublishFailed(ILogger logger, string reason);
}

/// <summary>A completed lease kept to check and audit the receipt that pays for it.</summary>
internal sealed record RememberedResult(SignedAttestation Attestation, long Price, byte[] AuditCommitment, int AuditRatePpm, long PaidBefore = 0);

/// <summary>A lease a provider holds: who asked, whether its task runs now, and its terms.</summary>
public sealed record ProviderLeaseView(ulong RequestId, PeerId Requester, bool Running, long FuelLimit, long MemoryLimitBytes,
    long PricePerMegaFuel, DateTimeOffset Deadline);
