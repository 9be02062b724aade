using System.Buffers.Binary;
using System.Security.Cryptography;
using Potluck.Protocol.Framing;
using Microsoft.Extensions.Logging;
using Potluck.Protocol;
using Potluck.Protocol.Host;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Identity;
using Potluck.Scheduler.Advertising;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Execution;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Metrics;
using Potluck.Scheduler.Matching;
using Potluck.Scheduler.Providing;
using Potluck.Scheduler.Sandbox;
using Potluck.Scheduler.Topics;
using Potluck.Scheduler.Verification;

namespace Potluck.Scheduler.Requesting;

/// <summary>
/// The requester's API: <see cref="SubmitAsync"/> runs a task somewhere on the network and returns its output.
/// <list type="bullet">
/// <item>Choosing: advertisements heard on <see cref="AdvertisementProtocol.Topic"/> are kept in an
/// <see cref="AdvertisementBook"/>; <see cref="ProviderSelector"/> filters (price, memory, runtime version, refused
/// providers, those already tried) and ranks with a seeded random term, and a <see cref="NoMatch"/> explanation
/// ends a submission no provider fits.</item>
/// <item>Leasing: one <see cref="RequesterLease"/> per attempt over <see cref="LeaseProtocol.Id"/>, on one stream per
/// provider that its leases share (<see cref="LeaseChannel"/>); a rejected,
/// failed, expired or fraudulent lease is retried on another provider, up to
/// <see cref="ComputeClientOptions.MaxAttempts"/>.</item>
/// <item>Checking: the provider's attestation must be signed by it and name this lease, module, input and output.
/// A sample of results (<see cref="VerificationPolicy"/>: always for strangers, decaying to a floor) is re-run
/// locally, or with no local sandbox, on a second provider; <see cref="TaskSubmission.Replicas"/> &gt; 1 runs the
/// task on that many providers at once. A result a deterministic re-run contradicts is fraud: the provider is
/// refused and not paid, a <see cref="FraudProof"/> is published, and the task runs again elsewhere.</item>
/// <item>Paying: the ledger reserves the most a lease can cost before it starts, settles the signed receipt
/// (fuel × agreed price) before sending it (on the lease stream when the provider speaks
/// <see cref="LeaseProtocol.IdWithReceipts"/>, else on <see cref="ReceiptProtocol.Id"/>) in the background, so the
/// result does not wait for the provider's acknowledgement, and marks it delivered once acknowledged; a lease not paid for is released. Receipts settled but not acknowledged (a crash, a provider
/// away) are sent again by <see cref="RedeliverReceiptsAsync"/>; the ledger counts each receipt id once.</item>
/// </list>
/// Thread-safe: submissions may run concurrently.
/// </summary>
public sealed partial class ComputeClient : IAsyncDisposable
{
    private readonly IHost _host;
    private readonly PrivateKey _key;
    private readonly ITopicBus _bus;
    private readonly CreditLedger _ledger;
    private readonly ReputationStore _reputation;
    private readonly FraudService _fraud;
    private readonly SandboxTaskExecutor? _verifier;
    private readonly ComputeClientOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger<ComputeClient> _log;
    private readonly VerificationPolicy _policy;
    private readonly ProviderSelector _selector;
    private readonly Lock _gate = new();
    private readonly AdvertisementBook _book;
    private readonly BackgroundWork _work;
    private readonly BackgroundWork _deliveryWork;
    private readonly ISecureRandom _secure;
    private readonly Dictionary<PeerId, LeaseChannel> _channels = [];
    private TaskCompletionSource _adsChanged = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly ComputeInstruments _instruments;
    private IDisposable? _subscription;

    /// <param name="verifier">The local sandbox for re-running sampled results; null verifies on a second provider instead.</param>
    /// <param name="runtime">
    /// The clock; security randomness for request ids and the decision to re-run (a provider must not predict it);
    /// protocol randomness for ranking equal providers.
    /// </param>
    /// <param name="instruments">The node's metrics; null counts into instruments of the client's own.</param>
    public ComputeClient(IHost host, PrivateKey key, ITopicBus bus, CreditLedger ledger, ReputationStore reputation, FraudService fraud,
        SandboxTaskExecutor? verifier, ComputeClientOptions options, NodeRuntime runtime, ILogger<ComputeClient> log,
        ComputeInstruments? instruments = null)
    {
        _instruments = instruments ?? ComputeInstruments.Detached();
        _host = host;
        _key = key;
        _bus = bus;
        _ledger = ledger;
        _reputation = reputation;
        _fraud = fraud;
        _verifier = verifier;
        _options = options;
        _time = runtime.Time;
        _secure = runtime.SecureRandom;
        _log = log;
        _work = runtime.CreateBackgroundWork("requester", log);
        _deliveryWork = runtime.CreateBackgroundWork("receipt delivery", log);
        _policy = new VerificationPolicy(options.Verification);
        _book = new AdvertisementBook(options.Advertising);
        _selector = new ProviderSelector(options.Selector, reputation.Reputation, p => host.Peers.Get(p)?.Latency, runtime.CreateRandom("provider ranking"));
    }

    public VerificationPolicy Policy => _policy;

    public ReputationStore Reputation => _reputation;

    /// <summary>Raised when a provider has acknowledged a receipt (its exact bytes): the accounting chain links the payment then.</summary>
    public event Action<PeerId, byte[]>? ReceiptDelivered;

    /// <summary>Raised when a lease attempt ends (tests wait on it; it runs on the submitting task).</summary>
    public event Action<AttemptRecord>? AttemptEnded;

    /// <summary>
    /// Subscribes to advertisements and recovers payments left by a previous run: reservations never settled are
    /// released (no receipt left this node), settled ones are sent again in the background.
    /// </summary>
    public void Start()
    {
        _subscription ??= _bus.Subscribe(AdvertisementProtocol.Topic, ValidateAdvertisement, OnAdvertisementAsync);
        _host.Connected += OnConnected;
        foreach (var connection in _host.Connections)
        {
            OnConnected(connection);
        }
        foreach (var r in _ledger.Reservations(PaymentState.Reserved))
        {
            _ledger.Release(r.LeaseId);
        }
        _work.Run("redeliver receipts", RedeliverPeriodicallyAsync);
    }

    /// <summary>Sends unacknowledged receipts again now and every <see cref="ComputeClientOptions.ReceiptRetryInterval"/> until stopped.</summary>
    private async Task RedeliverPeriodicallyAsync(CancellationToken ct)
    {
        while (!ct.IsCancellationRequested)
        {
            if (_ledger.Reservations(PaymentState.Settled).Count > 0)
            {
                await RedeliverReceiptsAsync(ct);
            }
            await Task.Delay(_options.ReceiptRetryInterval, _time, ct);
        }
    }

    /// <summary>Live advertisements held, ordered by provider.</summary>
    public IReadOnlyList<VerifiedAdvertisement> Providers()
    {
        lock (_gate)
        {
            return _book.Live(_time.GetUtcNow());
        }
    }

    /// <summary>
    /// Whether this node might use <paramref name="provider"/>: it holds a live advertisement from it or has a record of
    /// it (a proof against a provider nobody uses is not worth a re-run).
    /// </summary>
    public bool Knows(PeerId provider)
    {
        if (_reputation.Get(provider) != ProviderRecord.Empty)
        {
            return true;
        }
        lock (_gate)
        {
            return _book.Live(_time.GetUtcNow()).Any(a => a.Provider == provider);
        }
    }

    /// <summary>Completes once the book holds an advertisement from <paramref name="provider"/> newer than <paramref name="sequence"/>.</summary>
    public async Task WaitForAdvertisementAsync(PeerId provider, ulong sequence, CancellationToken ct)
    {
        while (true)
        {
            Task changed;
            lock (_gate)
            {
                if (_book.Live(_time.GetUtcNow()).Any(a => a.Provider == provider && a.Ad.Sequence > sequence))
                {
                    return;
                }
                changed = _adsChanged.Task;
            }
            await LoopSafeWait.WaitAsync(changed, ct);
        }
    }

    /// <summary>Completes once at least <paramref name="count"/> providers are known (for harnesses that start nodes together).</summary>
    public async Task WaitForProvidersAsync(int count, CancellationToken ct)
    {
        while (true)
        {
            Task changed;
            lock (_gate)
            {
                if (_book.Live(_time.GetUtcNow()).Count >= count)
                {
                    return;
                }
                changed = _adsChanged.Task;
            }
            await LoopSafeWait.WaitAsync(changed, ct);
        }
    }

    // ------------------------------------------------------------------ advertisements

    private TopicVerdict ValidateAdvertisement(TopicMessage message) =>
        AdvertisementCodec.TryOpen(message.Data.Span, _options.Advertising, out _) switch
        {
            AdVerdict.Accepted => TopicVerdict.Accept,
            AdVerdict.TooLarge or AdVerdict.Malformed or AdVerdict.BadSignature or AdVerdict.PeerMismatch => TopicVerdict.Reject,
            _ => TopicVerdict.Ignore,
        };

    private void OnConnected(IConnection connection) => _work.Run($"fetch ad from {connection.RemotePeer}", () => FetchAdvertisementAsync(connection));

    /// <summary>
    /// Asks a newly connected peer for its current advertisement (<see cref="AdvertisementProtocol.FetchProtocolId"/>),
    /// so providers are known at once rather than after their next gossip round. Peers that are no providers
    /// simply do not speak the protocol.
    /// </summary>
    private async Task FetchAdvertisementAsync(IConnection connection)
    {
        try
        {
            using var timeout = new CancellationTokenSource(_options.AdvertisementFetchTimeout, _time);
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(timeout.Token, _work.Stopping);
            await using var stream = await connection.OpenStreamAsync([AdvertisementProtocol.FetchProtocolId], linked.Token);
            await stream.Output.CompleteAsync();
            var envelope = await LengthPrefixed.ReadAsync(stream.Input, _options.Advertising.MaxEnvelopeBytes, AdvertisementProtocol.FetchProtocolId, linked.Token);
            if (envelope is not null)
            {
                AddAdvertisement(envelope);
            }
        }
        catch (Exception e) when (Failures.IsExpected(e, _work.Stopping))
        {
            // Not a provider, or gone: gossip still brings its advertisement if it has one.
        }
    }

    private ValueTask OnAdvertisementAsync(TopicMessage message, CancellationToken ct)
    {
        AddAdvertisement(message.Data.Span);
        return ValueTask.CompletedTask;
    }

    private void AddAdvertisement(ReadOnlySpan<byte> envelope)
    {
        lock (_gate)
        {
            if (_book.Add(envelope, _time.GetUtcNow(), out var ad) != AdVerdict.Accepted || ad is null)
            {
                return;
            }
            if (ad.Provider != _key.PeerId)
            {
                _host.Peers.AddAddresses(ad.Provider, ad.Addresses, AddressSource.Identify);
            }
            _adsChanged.TrySetResult();
            _adsChanged = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        }
    }

    // ------------------------------------------------------------------ submission

    /// <summary>Runs a task and returns its (checked) result.</summary>
    /// <exception cref="ArgumentException">The submission is malformed (no module, no fuel, too many replicas).</exception>
    /// <exception cref="SubmissionException">No provider fits, credits ran out, or every attempt failed.</exception>
    public async Task<SubmissionResult> SubmitAsync(TaskSubmission submission, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(submission);
        if (submission.Module.IsEmpty || submission.Fuel <= 0 || submission.MemoryBytes <= 0 || submission.MaxPricePerMegaFuel < 0)
        {
            throw new ArgumentException("a submission needs a module, positive fuel and memory, and a non-negative price", nameof(submission));
        }
        if (submission.Replicas < 1 || submission.Replicas > _policy.Options.MaxReplicas)
        {
            throw new ArgumentException($"replicas must be 1 to {_policy.Options.MaxReplicas}", nameof(submission));
        }
        var job = new Job(submission, new TaskPayload(submission.Args, submission.Input).Encode());
        job.Tried.Add(_key.PeerId);
        return submission.Replicas > 1
            ? await RunReplicatedAsync(job, submission.Replicas, ct)
            : await RunSampledAsync(job, ct);
    }

    /// <summary>One provider at a time; a sample re-checked; fraud or failure moves on to another provider.</summary>
    private async Task<SubmissionResult> RunSampledAsync(Job job, CancellationToken ct)
    {
        for (var attempt = 0; attempt < _options.MaxAttempts; attempt++)
        {
            var lease = await LeaseOnceAsync(job, ct);
            if (lease is null)
            {
                if (job.LastWasBusy)
                {
                    attempt--; // a busy provider is a market answer, not a failure: wait for capacity (bounded by WaitForCapacity)
                }
                continue;
            }
            var claimed = RunSummary.Of(lease.Attestation.Attestation);
            var (verdict, trusted) = await CheckAsync(job, lease, claimed, ct);
            _instruments.Verification(verdict);
            if (verdict == CheckVerdict.Mismatch)
            {
                await ConvictAsync(job, lease, ct);
                continue;
            }
            if (verdict == CheckVerdict.Match)
            {
                _reputation.RecordVerified(lease.Provider);
            }
            else if (verdict == CheckVerdict.Inconclusive)
            {
                _reputation.RecordInconclusive(lease.Provider);
            }
            else
            {
                _reputation.RecordUnchecked(lease.Provider);
            }
            if (verdict == CheckVerdict.Inconclusive && claimed.Outcome == AttestedOutcome.Trapped)
            {
                // A trap a re-run could not confirm (a stack overflow: where it happens depends on the machine) is never paid.
                _ledger.Release(lease.LeaseId);
                Record(job, new AttemptRecord(lease.Provider, LeaseOutcomeKind.Completed, "an unconfirmed trap: not paid", 0));
            }
            else
            {
                await PayAsync(job, lease, ct, compared: verdict is not null);
            }
            if (verdict == CheckVerdict.Inconclusive && trusted is { Summary.Deterministic: true })
            {
                return job.Finish(trusted, _key.PeerId, verified: true);
            }
            return job.Finish(lease, verified: verdict == CheckVerdict.Match);
        }
        if (job.Trusted is { } own)
        {
            return job.Finish(own, _key.PeerId, verified: true);
        }
        throw new SubmissionException($"no result after {job.History.Count} attempts: {Summarise(job.History)}", job.History);
    }

    /// <summary>
    /// Decides whether and how to check a result: against a result already trusted (free), by a local re-run, or
    /// with no sandbox here, by leasing the task to a second provider. Returns null when not checked.
    /// </summary>
    private async Task<(CheckVerdict? Verdict, TrustedRun? Trusted)> CheckAsync(Job job, LeaseResultInfo lease, RunSummary claimed, CancellationToken ct)
    {
        if (job.Trusted is { } known)
        {
            return (FraudChecker.Compare(claimed, known.Summary), known);
        }
        // Fixed only now that the signed attestation exists, from the secret committed to in the terms (revealed with the
        // receipt, so the provider can audit that the declared rate was followed).
        var sample = LeaseAudit.Selected(lease.AuditSecret, lease.Attestation.Hash, lease.AuditRatePpm);
        if (!sample)
        {
            return (null, null);
        }
        if (_verifier is not null && _verifier.CanReproduce(job.Submission.Fuel, job.Submission.MemoryBytes))
        {
            var rerun = await _verifier.RunAsync(job.Submission.Module, job.Payload, job.Submission.Fuel, job.Submission.MemoryBytes, ct);
            var trusted = new TrustedRun(RunSummary.Of(rerun), rerun.Stdout, ExecutionMapping.ToStatus(rerun.Outcome), rerun.ExitCode ?? 0,
                rerun.Error ?? rerun.Trap?.Description) { Stderr = rerun.Stderr };
            if (trusted.Summary.Deterministic)
            {
                job.Trusted = trusted;
            }
            return (FraudChecker.Compare(claimed, trusted.Summary), trusted);
        }
        // No local sandbox: a second provider runs it; agreement verifies, disagreement cannot say who lied.
        var second = await LeaseOnceAsync(job, ct, alwaysCompared: true);
        if (second is null)
        {
            return (null, null);
        }
        var other = RunSummary.Of(second.Attestation.Attestation);
        var agree = other.SameAs(claimed);
        if (agree)
        {
            _reputation.RecordVerified(second.Provider);
            await PayAsync(job, second, ct, compared: true);
        }
        else
        {
            _reputation.RecordInconclusive(second.Provider);
            await PayAsync(job, second, ct, compared: true);
        }
        return (agree ? CheckVerdict.Match : CheckVerdict.Inconclusive, null);
    }

    /// <summary>k providers at once; the result most agree on (or a local re-run when they split) wins.</summary>
    private async Task<SubmissionResult> RunReplicatedAsync(Job job, int replicas, CancellationToken ct)
    {
        var results = new List<LeaseResultInfo>();
        for (var round = 0; round < _options.MaxAttempts && results.Count < replicas; round++)
        {
            var wanted = replicas - results.Count;
            int busyBefore;
            lock (_gate)
            {
                busyBefore = job.BusyRefusals;
            }
            var batch = await Task.WhenAll(Enumerable.Range(0, wanted).Select(_ => LeaseOnceAsync(job, ct, alwaysCompared: true)));
            results.AddRange(batch.OfType<LeaseResultInfo>());
            lock (_gate)
            {
                if (batch.Count(b => b is null) == job.BusyRefusals - busyBefore && job.BusyRefusals > busyBefore)
                {
                    round--; // only busy refusals: capacity to wait for (bounded by WaitForCapacity), not failed attempts
                }
            }
        }
        if (results.Count == 0)
        {
            throw new SubmissionException($"no replica produced a result: {Summarise(job.History)}", job.History);
        }
        var groups = results.GroupBy(r => Convert.ToHexString(Fingerprint(RunSummary.Of(r.Attestation.Attestation))))
            .OrderByDescending(g => g.Count()).ToList();
        TrustedRun? trusted = null;
        var tieBroken = false;
        if (groups.Count > 1 && !(_verifier is not null && _verifier.CanReproduce(job.Submission.Fuel, job.Submission.MemoryBytes)))
        {
            (results, groups, tieBroken) = await TieBreakAsync(job, results, groups, ct); // ComputeClient.TieBreak.cs
        }
        // Agreement proves nothing among identities that may be one adversary (Sybils): replicas count as verified only
        // with a re-run here, or when a provider in good standing (past its stranger results) is among those agreeing.
        bool inGoodStanding;
        lock (_gate)
        {
            inGoodStanding = (groups.Count == 1 || (tieBroken && groups[0].Count() * 2 > results.Count)) && groups[0].Any(r => _reputation.Get(r.Provider).ConsecutiveVerified >= _policy.Options.StrangerResults);
        }
        if ((groups.Count > 1 || !inGoodStanding) && _verifier is not null && _verifier.CanReproduce(job.Submission.Fuel, job.Submission.MemoryBytes))
        {
            var rerun = await _verifier.RunAsync(job.Submission.Module, job.Payload, job.Submission.Fuel, job.Submission.MemoryBytes, ct);
            trusted = new TrustedRun(RunSummary.Of(rerun), rerun.Stdout, ExecutionMapping.ToStatus(rerun.Outcome), rerun.ExitCode ?? 0,
                rerun.Error ?? rerun.Trap?.Description) { Stderr = rerun.Stderr };
        }
        LeaseResultInfo? chosen = null;
        var majority = groups[0].Count() * 2 > results.Count;
        foreach (var r in results)
        {
            var summary = RunSummary.Of(r.Attestation.Attestation);
            var verdict = trusted is not null
                ? FraudChecker.Compare(summary, trusted.Summary)
                : groups[0].Contains(r) ? CheckVerdict.Match : CheckVerdict.Inconclusive;
            _instruments.Verification(verdict);
            if ((verdict == CheckVerdict.Mismatch && trusted is { Summary.Deterministic: true }) || (tieBroken && inGoodStanding && verdict != CheckVerdict.Match))
            {
                await ConvictAsync(job, r, ct);
                continue;
            }
            if (verdict == CheckVerdict.Match && (trusted is not null || inGoodStanding))
            {
                _reputation.RecordVerified(r.Provider);
            }
            else if (verdict != CheckVerdict.Match)
            {
                _reputation.RecordInconclusive(r.Provider);
            }
            if (verdict == CheckVerdict.Match)
            {
                chosen ??= r;
            }
            if (verdict == CheckVerdict.Match && (trusted is not null || majority))
            {
                await PayAsync(job, r, ct, compared: true);
            }
            else
            {
                // Disagreeing replicas nobody could resolve: only a strict majority is paid, never the other side.
                _ledger.Release(r.LeaseId);
                Record(job, new AttemptRecord(r.Provider, LeaseOutcomeKind.Completed, "a replica outvoted or unresolved: not paid", 0));
            }
        }
        if (chosen is not null)
        {
            return job.Finish(chosen, verified: trusted is not null || inGoodStanding);
        }
        if (trusted is not null)
        {
            return job.Finish(trusted, _key.PeerId, verified: true);
        }
        return job.Finish(groups[0].First(), verified: false);
    }

    private static byte[] Fingerprint(RunSummary s) =>
        SHA256.HashData([.. BitConverter.GetBytes((int)s.Outcome), .. BitConverter.GetBytes(s.ExitCode), .. s.OutputHash,
            .. BitConverter.GetBytes(s.OutputSize), .. BitConverter.GetBytes(s.FuelUsed)]);

    /// <summary>Chooses a provider and runs one lease; null (recorded in the job's history) when it produced no acceptable result.</summary>
    /// <param name="alwaysCompared">
    /// The result will be compared with another whatever happens (a replica, or the second run of a check): the lease
    /// declares a re-run rate of one.
    /// </param>
    private async Task<LeaseResultInfo?> LeaseOnceAsync(Job job, CancellationToken ct, bool alwaysCompared = false)
    {
        var ad = await ChooseAsync(job, ct);
        var provider = ad.Provider;
        ulong requestId;
        int ratePpm;
        // The audit secret: committed to in the terms, revealed with the receipt; from the cryptographic generator.
        var secret = new byte[LeaseAudit.SecretLength];
        lock (_gate)
        {
            // A job holding a result it trusts compares every later result with it for free: declared as rate one.
            ratePpm = alwaysCompared || job.Trusted is not null
                ? LeaseAudit.AlwaysPpm
                : LeaseAudit.ToPpm(_policy.DeclaredRate(_reputation.Get(provider).ConsecutiveVerified, job.Submission.VerifyRate));
            _secure.Fill(secret);
            job.LastWasBusy = false;
            job.Tried.Add(provider);
            job.Why[provider] = Job.RunningReplica;
            // From the cryptographic generator: a request id must tell the provider nothing about what comes next.
            do
            {
                requestId = _secure.NextUInt64();
            }
            while (requestId == 0);
        }
        var s = job.Submission;
        var work = new LeaseWork
        {
            Module = s.Module,
            Input = job.Payload,
            FuelLimit = s.Fuel,
            MemoryLimitBytes = s.MemoryBytes,
            Deadline = _time.GetUtcNow() + (s.Deadline ?? _options.LeaseDeadline),
            MaxPricePerMegaFuel = s.MaxPricePerMegaFuel,
            AdvertisedPricePerMegaFuel = ad.Ad.PricePerMegaFuel,
            AuditCommitment = LeaseAudit.Commit(secret),
            AuditRatePpm = ratePpm,
            AcceptsDebitNotes = true,
        };
        var leaseId = ExecutionMapping.LeaseId(requestId);
        var maxCost = new LeaseTerms { PricePerMegaFuel = s.MaxPricePerMegaFuel }.CostOf(s.Fuel);
        var reserved = _ledger.ReservePayment(leaseId, provider, maxCost);
        if (reserved is LedgerResult.InsufficientFunds)
        {
            throw new SubmissionException(string.Create(System.Globalization.CultureInfo.InvariantCulture,
                $"insufficient credits: a lease may cost up to {maxCost / 1e6:0.000000} credits (--fuel × --max-price), {_ledger.Available() / 1e6:0.000000} available, and this node lets itself owe at most {_ledger.MaxDebt / 1e6:0.000000} ('compute:credits:maxDebt'); earn credits by providing (`potluck run`)"), job.History);
        }
        var lease = new RequesterLease(_key, ad.Key, requestId, work, _options.Lease);
        var payer = new DebitNotePayer(this, lease, provider, leaseId);
        LeaseOutcome outcome;
        _instruments.LeaseStarted(LeaseRole.Requester);
        var ended = LeaseOutcomeKind.Cancelled;
        try
        {
            await using (var runner = new LeaseRunner(ChannelTo(provider), lease, _time, _work) { OnDebitNote = payer.OnNote })
            {
                outcome = await runner.RunAsync(ct);
            }
            ended = outcome.Kind;
        }
        finally
        {
            _instruments.LeaseEnded(LeaseRole.Requester, ended);
            job.Cost += payer.PaidAmount; // debit notes paid as the lease ran, whatever came of it
        }
        if (outcome.RejectReason is not LeaseRejectReason.Busy)
        {
            lock (_gate)
            {
                job.BusySince = null; // the provider answered with more than "busy": the wait for capacity is over
            }
        }
        if (outcome.Kind != LeaseOutcomeKind.Completed || outcome.Result is not { } result || outcome.Terms is not { } terms)
        {
            _ledger.Release(leaseId);
            if (outcome.Kind is LeaseOutcomeKind.Expired or LeaseOutcomeKind.Cancelled)
            {
                // Lost on the way (the provider restarted and no longer knows the lease, or it or the connection went
                // silent): it counts as a failed attempt, but the provider may be asked again, once it has advertised
                // again or BusyRetryInterval has passed (a restarted provider is redialled), within MaxAttempts.
                _reputation.RecordFailure(provider);
                lock (_gate)
                {
                    job.Tried.Remove(provider);
                    job.BusyAt[provider] = new BusyRefusal(ad.Ad.Sequence, _time.GetUtcNow() + _options.BusyRetryInterval, _options.BusyRetryInterval);
                }
            }
            else if (outcome.RejectReason is not LeaseRejectReason.Busy)
            {
                _reputation.RecordFailure(provider);
            }
            else
            {
                lock (_gate)
                {
                    // Busy is "wait and retry", never "tried": skipped only until its next advertisement says what it has
                    // free (ChooseAsync waits for that, bounded by WaitForCapacity), then asked again.
                    job.Tried.Remove(provider);
                    var backoff = job.BusyAt.TryGetValue(provider, out var before)
                        ? TimeSpan.FromTicks(Math.Min(before.Backoff.Ticks * 2, _options.BusyRetryInterval.Ticks))
                        : TimeSpan.FromTicks(Math.Min(TimeSpan.FromSeconds(1).Ticks, _options.BusyRetryInterval.Ticks));
                    job.BusyAt[provider] = new BusyRefusal(ad.Ad.Sequence, _time.GetUtcNow() + backoff, backoff);
                    job.LastWasBusy = true;
                    job.BusyRefusals++;
                }
            }
            Record(job, new AttemptRecord(provider, outcome.Kind, outcome.Detail, 0));
            ct.ThrowIfCancellationRequested();
            return null;
        }
        var output = result.Output ?? [];
        // The request already hashed module and input, and the lease checked the output against its hash.
        var expectation = new AttestationExpectation(leaseId, _key.PeerId, provider, lease.Request.ModuleHash, lease.Request.InputHash,
            result.Output is null ? SHA256.HashData(output) : result.OutputHash, output.Length);
        var attestation = SignedAttestation.Verify(result.Attestation, expectation, _options.Credits);
        var claimedStatus = attestation.IsValid ? ExecutionMapping.ToStatus(attestation.Value!.Attestation.Outcome, attestation.Value.Attestation.ExitCode) : default;
        if (!attestation.IsValid || attestation.Value!.Attestation.FuelUsed != (ulong)result.FuelUsed || result.Output is null
            || claimedStatus != result.Status)
        {
            // Unsigned, or not about what was delivered: nothing to pay for and nothing to prove.
            _ledger.Release(leaseId);
            _reputation.RecordFailure(provider);
            var why = attestation.IsValid ? "result does not match its attestation" : $"attestation {attestation.Status}";
            Record(job, new AttemptRecord(provider, LeaseOutcomeKind.Failed, why, 0));
            return null;
        }
        if (claimedStatus == ExecutionStatus.TimedOut)
        {
            // A wall-clock timeout is not a result: nothing proves the work was done, so it is never paid, and it
            // counts against the provider (which chose to accept a task it could not finish).
            _ledger.Release(leaseId);
            _reputation.RecordFailure(provider);
            Record(job, new AttemptRecord(provider, LeaseOutcomeKind.Failed, "the provider's wall clock ran out: not paid", 0));
            return null;
        }
        if (attestation.Value!.Attestation.FuelUsed < payer.PaidFuel)
        {
            // Paid by debit notes for fuel the signed result does not report: the rest is not paid, and it counts against the
            // provider (what the notes paid is its earnings here, held back and forfeited on a proof of fraud).
            _ledger.Release(leaseId);
            _reputation.RecordFailure(provider);
            Record(job, new AttemptRecord(provider, LeaseOutcomeKind.Failed, "the attestation reports less fuel than debit notes were paid for: not paid", 0));
            return null;
        }
        if (!LeaseCodec.TryDecodeTerms(terms.Terms, _options.Lease, out var decodedTerms))
        {
            _ledger.Release(leaseId);
            Record(job, new AttemptRecord(provider, LeaseOutcomeKind.Failed, "terms do not decode", 0));
            return null;
        }
        return new LeaseResultInfo(provider, leaseId, terms, decodedTerms, result, output, attestation.Value!, secret, ratePpm, payer.PaidAmount);
    }

    /// <summary>The lease stream shared by every lease with <paramref name="provider"/>.</summary>
    private LeaseChannel ChannelTo(PeerId provider)
    {
        lock (_gate)
        {
            if (!_channels.TryGetValue(provider, out var channel))
            {
                if (_channels.Count >= _options.MaxLeaseChannels)
                {
                    // Bounded: close the channels no lease is using (a later lease with that provider opens a new one).
                    foreach (var (peer, idle) in _channels.Where(kv => kv.Value.IsIdle).ToList())
                    {
                        _channels.Remove(peer);
                        _work.Track("close idle lease channel", idle.DisposeAsync());
                    }
                }
                _channels[provider] = channel = new LeaseChannel(_host, provider, _options.Lease, _time, _work);
            }
            return channel;
        }
    }

    /// <summary>Lease streams opened to <paramref name="provider"/> so far (tests check that leases share one).</summary>
    internal long LeaseStreamsOpened(PeerId provider)
    {
        lock (_gate)
        {
            return _channels.TryGetValue(provider, out var channel) ? channel.StreamsOpened : 0;
        }
    }

    /// <summary>
    /// The best provider that fits <paramref name="job"/>. While every provider that fits is busy (its advertisement says
    /// so, or it refused this job as busy at its current advertisement), waits for a newer advertisement, up to
    /// <see cref="ComputeClientOptions.WaitForCapacity"/> from the start of the wait: busy means "wait and retry", never
    /// "excluded". With no provider seen at all, waits up to <see cref="ComputeClientOptions.WaitForProviders"/>. Otherwise
    /// fails with a <see cref="SubmissionException"/> whose message names each provider's reason.
    /// </summary>
    private async Task<VerifiedAdvertisement> ChooseAsync(Job job, CancellationToken ct)
    {
        var providersBy = _time.GetUtcNow() + _options.WaitForProviders;
        while (true)
        {
            Task changed;
            SelectionResult selection;
            int busyHere;
            Dictionary<PeerId, string> excludedWhy;
            bool selfSeen;
            DateTimeOffset? retryAt = null;
            lock (_gate)
            {
                var now = _time.GetUtcNow();
                var refused = _reputation.RefusedProviders();
                var excluded = new HashSet<PeerId>(job.Tried);
                excluded.UnionWith(refused);
                var live = _book.Live(now);
                selfSeen = live.Any(a => a.Provider == _key.PeerId);
                var candidates = new List<VerifiedAdvertisement>(live.Count);
                busyHere = 0;
                foreach (var ad in live)
                {
                    if (!excluded.Contains(ad.Provider) && job.BusyAt.TryGetValue(ad.Provider, out var refusal)
                        && ad.Ad.Sequence <= refusal.Sequence && now < refusal.RetryAt)
                    {
                        // Refused this job as busy: asked again once it publishes something newer, or at RetryAt.
                        busyHere++;
                        retryAt = retryAt is { } r && r < refusal.RetryAt ? r : refusal.RetryAt;
                        continue;
                    }
                    candidates.Add(ad);
                }
                var requirements = new Requirements
                {
                    MinMemoryBytes = job.Submission.MemoryBytes,
                    MaxPricePerMegaFuel = job.Submission.MaxPricePerMegaFuel,
                    ExcludedPeers = excluded,
                    RuntimeVersion = ComputeRuntime.Version,
                    RequiredPolicy = ProviderPolicyFlags.Attests,
                    MaxResults = 1,
                };
                selection = _selector.Select(candidates, requirements, now);
                excludedWhy = [];
                foreach (var ad in candidates.Where(a => excluded.Contains(a.Provider)))
                {
                    excludedWhy[ad.Provider] = ad.Provider == _key.PeerId ? "this node itself"
                        : refused.Contains(ad.Provider) ? $"refused by this node ({_reputation.Get(ad.Provider).RefusedReason})"
                        : job.Why.GetValueOrDefault(ad.Provider, "tried already");
                }
                changed = _adsChanged.Task;
            }
            if (selection is Matched matched)
            {
                return matched.Providers[0].Advertisement;
            }
            var noMatch = (NoMatch)selection;
            var busy = busyHere + noMatch.Mismatches.GetValueOrDefault(MismatchReason.Busy);
            var now2 = _time.GetUtcNow();
            DateTimeOffset waitUntil;
            if (busy > 0)
            {
                lock (_gate)
                {
                    job.BusySince ??= now2;
                    waitUntil = job.BusySince.Value + _options.WaitForCapacity;
                }
                providersBy = now2 + _options.WaitForProviders; // should the busy ones vanish, the usual wait for others
            }
            else
            {
                // Nobody but this node itself (a daemon that provides too): others may still turn up.
                waitUntil = noMatch.Seen + busyHere - (selfSeen ? 1 : 0) == 0 ? providersBy : now2;
            }
            var left = waitUntil - now2;
            if (left <= TimeSpan.Zero)
            {
                var explanation = Explain(noMatch, busyHere, excludedWhy, job);
                if (busy > 0)
                {
                    explanation += $" (waited {FormatSpan(_options.WaitForCapacity)} for a free core: compute:client:waitForCapacity)";
                }
                List<AttemptRecord> tried;
                lock (_gate)
                {
                    tried = [.. job.History];
                }
                throw new SubmissionException(tried.Count == 0 ? $"no provider fits: {explanation}" : $"no provider fits: {explanation}; tried: {Summarise(tried)}", tried)
                {
                    Reasons = ReasonCounts(noMatch, busyHere, excludedWhy),
                };
            }
            if (retryAt is { } retry && retry - now2 < left)
            {
                // A provider that refused as busy is asked again by then even if it publishes nothing new: its advertisement
                // need not change (a core taken and freed within its publishing gap looks the same as before).
                left = retry - now2 < TimeSpan.Zero ? TimeSpan.Zero : retry - now2;
            }
            try
            {
                await LoopSafeWait.WaitAsync(changed, left, _time, ct);
            }
            catch (TimeoutException)
            {
            }
        }
    }

    private static string FormatSpan(TimeSpan span) =>
        span.TotalHours >= 1 && span.TotalHours == Math.Floor(span.TotalHours) ? $"{span.TotalHours:0} h"
        : span.TotalMinutes >= 1 && span.TotalMinutes == Math.Floor(span.TotalMinutes) ? $"{span.TotalMinutes:0} min"
        : $"{span.TotalSeconds:0} s";

    /// <summary>
    /// Each reason a provider did not fit, with its count, the excluded ones by their own cause (refused and why, dead,
    /// already running a replica, this node itself) rather than as "excluded".
    /// </summary>
    private static IReadOnlyDictionary<string, int> ReasonCounts(NoMatch noMatch, int busyHere, Dictionary<PeerId, string> excludedWhy)
    {
        var counts = new Dictionary<string, int>();
        foreach (var (reason, count) in noMatch.Mismatches)
        {
            if (reason != MismatchReason.Excluded && count > 0)
            {
                counts[NoMatch.Describe(reason)] = count;
            }
        }
        if (busyHere > 0)
        {
            counts["busy"] = counts.GetValueOrDefault("busy") + busyHere;
        }
        foreach (var why in excludedWhy.Values)
        {
            counts[why] = counts.GetValueOrDefault(why) + 1;
        }
        return counts;
    }

    private static string Explain(NoMatch noMatch, int busyHere, Dictionary<PeerId, string> excludedWhy, Job job)
    {
        var seen = noMatch.Seen + busyHere;
        if (seen == 0)
        {
            return "no providers seen";
        }
        var counts = ReasonCounts(noMatch, busyHere, excludedWhy);
        var text = $"{seen} provider{(seen == 1 ? "" : "s")} seen: " +
            string.Join(", ", counts.OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => $"{kv.Value} {kv.Key}"));
        if (job.Submission.Replicas > 1 && excludedWhy.Values.Any(w => w is Job.RunningReplica or Job.RanAlready))
        {
            text += $"; too few providers for --replicas {job.Submission.Replicas}";
        }
        return text;
    }

    /// <summary>A result a deterministic re-run contradicts: refuse, do not pay, prove it to everyone.</summary>
    private async Task ConvictAsync(Job job, LeaseResultInfo lease, CancellationToken ct)
    {
        _ledger.Release(lease.LeaseId);
        _reputation.Refuse(lease.Provider, "its attested result differs from a deterministic re-run");
        Forfeiture.Apply(_ledger, _instruments, lease.Provider, lease.LeaseId); // what it still holds from us is lost too
        var proof = FraudProof.Create(lease.SignedTerms, lease.Attestation.EnvelopeBytes, job.Submission.Module, job.Payload, lease.AuditSecret);
        var published = await _fraud.PublishAsync(proof, ct);
        LogFraud(_log, lease.Provider, published);
        Record(job, new AttemptRecord(lease.Provider, LeaseOutcomeKind.Completed, "fraud: the attested result differs from a re-run; not paid, refused", 0));
    }

    // ------------------------------------------------------------------ payment

    /// <param name="compared">Whether this result was checked (re-run or compared), as the receipt tells the provider.</param>
    private async Task PayAsync(Job job, LeaseResultInfo lease, CancellationToken ct, bool compared)
    {
        var price = (ulong)Math.Max(0, lease.Terms.PricePerMegaFuel);
        var receipt = SignedReceipt.Create(Receipt.For(lease.Attestation, price, _time.GetUtcNow(), lease.AuditSecret, compared, lease.PaidBefore), _key);
        var settled = _ledger.Settle(receipt);
        if (settled is not (LedgerResult.Recorded or LedgerResult.AlreadyRecorded))
        {
            LogPaymentFailed(_log, lease.Provider, settled.ToString());
            Record(job, new AttemptRecord(lease.Provider, LeaseOutcomeKind.Completed, $"result accepted; payment not settled ({settled})", 0));
            return;
        }
        if (settled is LedgerResult.Recorded)
        {
            _instruments.CreditsSpent(receipt.Receipt.Amount);
        }
        job.Cost += receipt.Receipt.Amount;
        Record(job, new AttemptRecord(lease.Provider, LeaseOutcomeKind.Completed, lease.Result.Status.ToString(), receipt.Receipt.Amount));
        // The payment is final once settled (durably) here; handing the receipt over is the provider's business and
        // need not hold up the result: it goes on in the background (see WhenReceiptsDeliveredAsync and DisposeAsync).
        StartDelivery(lease.Provider, lease.LeaseId, receipt.EnvelopeBytes);
    }

    private void StartDelivery(PeerId provider, byte[] leaseId, byte[] receipt)
    {
        _deliveryWork.Run($"deliver receipt to {provider}", ct => DeliverAsync(provider, leaseId, receipt, ct));
    }

    /// <summary>
    /// Completes when every receipt handed over in the background so far has been acknowledged or has failed (a failed
    /// one stays Settled in the ledger and is sent again by <see cref="RedeliverReceiptsAsync"/>).
    /// </summary>
    public Task WhenReceiptsDeliveredAsync(CancellationToken ct)
    {
        return LoopSafeWait.WaitAsync(_deliveryWork.WhenIdleAsync(), ct);
    }

    /// <summary>
    /// Sends a settled receipt (on the provider's lease stream when it takes receipts there, else on
    /// <see cref="ReceiptProtocol.Id"/>); marks it delivered once acknowledged. False when it must be sent again later.
    /// </summary>
    private async Task<bool> DeliverAsync(PeerId provider, byte[] leaseId, byte[] receipt, CancellationToken ct)
    {
        try
        {
            using var timeout = new CancellationTokenSource(_options.ReceiptTimeout, _time);
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(timeout.Token, ct, _work.Stopping);
            if (leaseId.Length == 8
                && await ChannelTo(provider).ExchangeReceiptAsync(BinaryPrimitives.ReadUInt64BigEndian(leaseId), receipt, linked.Token) is { } answer)
            {
                return Acknowledged(provider, leaseId, ReceiptProtocol.TryDecodeAck(answer, out var lease)
                    ? lease
                    : throw new ProtocolViolationException(LeaseProtocol.IdWithReceipts, "malformed acknowledgement"), receipt);
            }
            await using var stream = await _host.NewStreamAsync(provider, [ReceiptProtocol.Id], linked.Token);
            return Acknowledged(provider, leaseId, await ReceiptProtocol.SendAsync(stream, receipt, linked.Token), receipt);
        }
        catch (Exception e) when (Failures.IsExpected(e, _work.Stopping))
        {
            LogReceiptUndelivered(_log, provider, e.Message);
        }
        return false;
    }

    private bool Acknowledged(PeerId provider, byte[] leaseId, ReceiptAck ack, byte[] receipt)
    {
        if (ack.Delivered)
        {
            _ledger.MarkDelivered(leaseId);
            ReceiptDelivered?.Invoke(provider, receipt);
            return true;
        }
        LogReceiptRefused(_log, provider, ack.Detail);
        return false;
    }

    /// <summary>Sends every settled, unacknowledged receipt again; returns how many are now delivered.</summary>
    public async Task<int> RedeliverReceiptsAsync(CancellationToken ct)
    {
        var delivered = 0;
        foreach (var r in _ledger.Reservations(PaymentState.Settled))
        {
            if (r.Receipt is { } receipt && await DeliverAsync(r.Provider, r.LeaseId, receipt, ct))
            {
                delivered++;
            }
        }
        return delivered;
    }

    private void Record(Job job, AttemptRecord record)
    {
        lock (_gate)
        {
            job.History.Add(record);
            job.Why[record.Provider] = Job.Cause(record);
        }
        AttemptEnded?.Invoke(record);
    }

    private static string Summarise(IEnumerable<AttemptRecord> history) =>
        string.Join("; ", history.Select(h => $"{h.Provider}: {h.Outcome} ({h.Detail})"));

    public async ValueTask DisposeAsync()
    {
        _host.Connected -= OnConnected;
        _subscription?.Dispose();
        // Receipts still being handed over finish first (each is bounded by ReceiptTimeout), so a short-lived requester
        // such as `potluck submit` pays before it exits.
        await _deliveryWork.WhenIdleAsync();
        await _deliveryWork.StopAsync();
        // Close the lease streams first: their read loops are background work that ends when its stream does.
        LeaseChannel[] channels;
        lock (_gate)
        {
            channels = [.. _channels.Values];
            _channels.Clear();
        }
        foreach (var channel in channels)
        {
            await channel.DisposeAsync();
        }
        await _work.StopAsync();
    }

    private sealed record BusyRefusal(ulong Sequence, DateTimeOffset RetryAt, TimeSpan Backoff);

    /// <summary>A result this node computed itself.</summary>
    private sealed record TrustedRun(RunSummary Summary, ReadOnlyMemory<byte> Output, ExecutionStatus Status, int ExitCode, string? Error)
    {
        public ReadOnlyMemory<byte> Stderr { get; init; }
    }

    /// <summary>A completed lease whose attestation checked out.</summary>
    private sealed record LeaseResultInfo(PeerId Provider, byte[] LeaseId, SignedLeaseTerms SignedTerms, LeaseTerms Terms, LeaseResult Result,
        byte[] Output, SignedAttestation Attestation, byte[] AuditSecret, int AuditRatePpm, long PaidBefore = 0);

    private sealed class Job(TaskSubmission submission, byte[] payload)
    {
        public TaskSubmission Submission { get; } = submission;

        public byte[] Payload { get; } = payload;

        public HashSet<PeerId> Tried { get; } = [];

        /// <summary>Why each tried provider is not asked again, in words (for "no provider fits").</summary>
        public Dictionary<PeerId, string> Why { get; } = [];

        public const string RunningReplica = "already running this task";

        public const string RanAlready = "ran this task already";

        /// <summary>The reason an attempt's provider is not asked again: refused (and why), dead, failed, or used.</summary>
        public static string Cause(AttemptRecord record) => record.Outcome switch
        {
            LeaseOutcomeKind.Rejected => "refused: " + RejectDetail(record.Detail),
            LeaseOutcomeKind.Expired => $"dead or unreachable ({record.Detail})",
            LeaseOutcomeKind.Cancelled => $"cancelled ({record.Detail})",
            LeaseOutcomeKind.Failed => $"failed ({record.Detail})",
            _ => record.Detail.StartsWith("fraud", StringComparison.Ordinal) ? "caught cheating" : RanAlready,
        };

        /// <summary>"Policy: fuel limit over 100" → "fuel limit over 100" (the provider's own words, bounded by the lease options).</summary>
        private static string RejectDetail(string detail)
        {
            var colon = detail.IndexOf(": ", StringComparison.Ordinal);
            return colon > 0 && Enum.TryParse<LeaseRejectReason>(detail[..colon], out _) ? detail[(colon + 2)..] : detail;
        }

        /// <summary>
        /// Providers that refused as busy, with the advertisement sequence they had then: skipped until they publish a
        /// newer one or until RetryAt (1 s after the first refusal, doubling up to BusyRetryInterval).
        /// </summary>
        public Dictionary<PeerId, BusyRefusal> BusyAt { get; } = [];

        /// <summary>
        /// When this job began waiting for a core (every provider that fits busy, or refusing it as busy); null while it
        /// is not waiting. Bounds the wait by <see cref="ComputeClientOptions.WaitForCapacity"/>.
        /// </summary>
        public DateTimeOffset? BusySince { get; set; }

        /// <summary>Busy refusals so far (they are not attempts).</summary>
        public int BusyRefusals { get; set; }

        /// <summary>The last lease ended in a busy refusal that does not count as an attempt.</summary>
        public bool LastWasBusy { get; set; }

        public List<AttemptRecord> History { get; } = [];

        public TrustedRun? Trusted { get; set; }

        public long Cost { get; set; }

        public SubmissionResult Finish(LeaseResultInfo lease, bool verified) => new()
        {
            Status = lease.Result.Status,
            ExitCode = lease.Result.ExitCode,
            Output = lease.Output,
            Stderr = lease.Result.Stderr ?? [],
            Provider = lease.Provider,
            Fuel = lease.Result.FuelUsed,
            Cost = Cost,
            Verified = verified,
            History = [.. History],
            Error = Explain(lease.Result.Status, lease.Result.ExitCode, null),
        };

        public SubmissionResult Finish(TrustedRun run, PeerId self, bool verified) => new()
        {
            Status = run.Status,
            ExitCode = run.ExitCode,
            Output = run.Output,
            Stderr = run.Stderr,
            Provider = self,
            Fuel = run.Summary.FuelUsed,
            Cost = Cost,
            Verified = verified,
            History = [.. History],
            Error = Explain(run.Status, run.ExitCode, run.Error),
        };

        private string? Explain(ExecutionStatus status, int exitCode, string? detail) => status switch
        {
            ExecutionStatus.Success => null,
            ExecutionStatus.Trapped when exitCode != 0 => $"the task exited with code {exitCode}",
            ExecutionStatus.Trapped => "the task trapped (a WebAssembly runtime error such as unreachable, division by zero or stack overflow)" + Suffix(detail),
            ExecutionStatus.OutOfFuel => $"the task ran out of fuel (limit {Submission.Fuel}); it may loop forever or need a larger --fuel",
            ExecutionStatus.OutOfMemory => $"the task hit the memory limit of {Submission.MemoryBytes} bytes",
            ExecutionStatus.OutputTooLarge => $"the task wrote more than {ComputeRuntime.MaxOutputBytes} bytes of output",
            ExecutionStatus.InvalidModule => "the module is not a valid WASI preview 1 command (not WebAssembly, unsupported imports, or no _start/memory)" + Suffix(detail),
            ExecutionStatus.TimedOut => "the task hit the provider's wall-clock limit",
            _ => status.ToString(),
        };

        private static string Suffix(string? detail) => detail is null ? "" : $": {detail}";
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Provider {Provider} returned a result a re-run contradicts: refused, not paid (proof published: {Published})")]
    private static partial void LogFraud(ILogger logger, PeerId provider, bool published);

    [LoggerMessage(Level = LogLevel.Error, Message = "Payment to {Provider} could not be settled: {Result}")]
    private static partial void LogPaymentFailed(ILogger logger, PeerId provider, string result);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Provider {Provider} refused a receipt: {Detail}")]
    private static partial void LogReceiptRefused(ILogger logger, PeerId provider, string detail);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Receipt to {Provider} not delivered yet: {Reason}")]
    private static partial void LogReceiptUndelivered(ILogger logger, PeerId provider, string reason);
}
