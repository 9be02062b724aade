using Microsoft.Extensions.Logging;
using Potluck.Protocol;
using Potluck.Protocol.Framing;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Topics;
using Potluck.Scheduler.Verification;

namespace Potluck.Scheduler.Accounting;

/// <summary>Settings of the bilateral accounting chain.</summary>
public sealed record AccountingOptions
{
    /// <summary>Record every payment in both parties' chains. Default true.</summary>
    public bool Enabled { get; init; } = true;

    /// <summary>Size limits on half-blocks taken from peers.</summary>
    public ChainOptions Chain { get; init; } = new();

    /// <summary>Longest wait for a provider's agreement. Default 10 s.</summary>
    public TimeSpan ExchangeTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>How often proposals without an agreement (a crash, a provider away) are sent again. Default 30 s.</summary>
    public TimeSpan RetryInterval { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>How long after a receipt is acknowledged its proposal is made, so that proposals go in batches. Default 200 ms.</summary>
    public TimeSpan ProposeDelay { get; init; } = TimeSpan.FromMilliseconds(200);

    /// <summary>
    /// Propose a round's payments to one provider as one batch block (<see cref="ChainBlock.Payments"/>; one signature on
    /// each side for the batch), not one block per payment. Default true.
    /// </summary>
    public bool Batch { get; init; } = true;

    /// <summary>Proposals made, or sent again, per round. Default 64.</summary>
    public int MaxRetriesPerRound { get; init; } = 64;

    /// <summary>Publish each completed payment (proposal and agreement) on <see cref="ChainProtocol.BlocksTopic"/>, so forks meet. Default true.</summary>
    public bool AnnounceBlocks { get; init; } = true;

    public CreditsOptions Credits { get; init; } = new();

    /// <summary>Recovering this node's chain from its counterparties after a lost ledger (<see cref="ChainQueryProtocol"/>).</summary>
    public ChainRecoveryOptions Recovery { get; init; } = new();

    /// <summary>Checking a requester's own chain before serving it beyond a stranger's terms (<see cref="ChainHistoryProtocol"/>).</summary>
    public ChainHistoryOptions History { get; init; } = new();
}

/// <summary>
/// The shell of the bilateral accounting chain (TrustChain, see <see cref="ChainBlock"/>). As a requester: once a provider
/// has acknowledged a receipt, the payment becomes a proposal half-block in this node's chain (in the ledger, durably,
/// before it leaves), sent on <see cref="ChainProtocol.Id"/> with the block before it; the provider's agreement comes back
/// and is kept. Proposals without an agreement are sent again at start and every <see cref="AccountingOptions.RetryInterval"/>.
/// As a provider: a proposal is checked (signature, author, continuity with the block shown before it, the payment is
/// a receipt this node recorded as earned, no fork with a block held) and answered with an agreement half-block
/// appended to this node's chain; the completed pair is published on <see cref="ChainProtocol.BlocksTopic"/>. Whoever
/// holds two blocks of one author at one seq has a fork proof: it keeps it, refuses the forker (no lease served, none
/// taken) and publishes it on <see cref="ChainProtocol.ForksTopic"/>, where every node checks it before it is forwarded; a
/// proof that does not check is rejected (the gossip layer lowers the sender's score) and costs its author its standing.
/// </summary>
public sealed partial class TrustChainService : IAsyncDisposable
{
    private readonly IHost _host;
    private readonly PrivateKey _key;
    private readonly ITopicBus _bus;
    private readonly CreditLedger _ledger;
    private readonly ReputationStore _reputation;
    private readonly AccountingOptions _options;
    private readonly ILogger<TrustChainService> _log;
    private readonly Metrics.ComputeInstruments _instruments;
    private readonly TimeProvider _time;
    private readonly BackgroundWork _work;
    private readonly BackgroundWork _proposals;
    private readonly Lock _gate = new();
    private readonly HashSet<PeerId> _forkers = [];
    private readonly CheckedBlocks _checked = new();
    private readonly CancellationTokenSource _linkNow = new();
    private int _linkScheduled;
    private IDisposable? _blocks;
    private IDisposable? _batches;
    private IDisposable? _forks;
    private long _agreed;
    private long _refused;

    public TrustChainService(IHost host, PrivateKey key, ITopicBus bus, CreditLedger ledger, ReputationStore reputation,
        AccountingOptions options, NodeRuntime runtime, ILogger<TrustChainService> log, Metrics.ComputeInstruments? instruments = null)
    {
        ArgumentNullException.ThrowIfNull(runtime);
        _host = host;
        _key = key;
        _bus = bus;
        _ledger = ledger;
        _reputation = reputation;
        _options = options;
        _log = log;
        _instruments = instruments ?? Metrics.ComputeInstruments.Detached();
        _time = runtime.Time;
        _work = runtime.CreateBackgroundWork("accounting", log);
        _proposals = runtime.CreateBackgroundWork("chain proposals", log);
    }

    /// <summary>Raised when this node first holds a fork proof against an author (found here or received).</summary>
    public event Action<ForkProof>? ForkFound;

    /// <summary>Test hook: called after a proposal is durably in the chain and before it is sent; throwing stops it there.</summary>
    internal Action<SignedBlock>? AfterProposalWritten { get; set; }

    /// <summary>Proposals this node countersigned as a provider.</summary>
    public long Agreed => Interlocked.Read(ref _agreed);

    /// <summary>Proposals this node refused as a provider.</summary>
    public long Refused => Interlocked.Read(ref _refused);

    /// <summary>Whether this node holds a fork proof against <paramref name="peer"/>.</summary>
    public bool IsForker(PeerId peer)
    {
        lock (_gate)
        {
            return _forkers.Contains(peer);
        }
    }

    /// <summary>Serves <see cref="ChainProtocol.Id"/>, joins the topics, refuses known forkers, and links what a previous run left unlinked.</summary>
    public void Start()
    {
        foreach (var (author, _) in _ledger.Forks())
        {
            lock (_gate)
            {
                _forkers.Add(author);
            }
            _reputation.Refuse(author, "holds a fork proof against it");
        }
        _host.SetStreamHandler(ChainProtocol.Id, HandleStreamAsync);
        _host.BudgetInboundStreams(ChainProtocol.Id, PeerBudgets.ChainRecords);
        _host.SetStreamHandler(ChainProtocol.BatchId, HandleStreamAsync);
        _host.BudgetInboundStreams(ChainProtocol.BatchId, PeerBudgets.ChainRecords);
        _host.SetStreamHandler(ChainProtocol.BatchBlocksId, HandleStreamAsync);
        _host.BudgetInboundStreams(ChainProtocol.BatchBlocksId, PeerBudgets.ChainRecords);
        _host.SetStreamHandler(ChainQueryProtocol.Id, HandleQueryAsync);
        _host.SetStreamHandler(ChainHistoryProtocol.Id, HandleHistoryAsync);
        _host.BudgetInboundStreams(ChainHistoryProtocol.Id, PeerBudgets.ChainRecords);
        _host.BudgetInboundStreams(ChainQueryProtocol.Id, PeerBudgets.ChainRecords);
        _blocks = _bus.Subscribe<GossipedPairs>(ChainProtocol.BlocksTopic, ValidateBlocks, OnPairsAsync);
        _batches = _bus.Subscribe<GossipedPairs>(ChainProtocol.BlockBatchesTopic, ValidateBatch, OnPairsAsync);
        _forks = _bus.Subscribe<ForkProof>(ChainProtocol.ForksTopic, ValidateFork, OnForkAsync);
        _work.Run("link unlinked proposals", RetryPeriodicallyAsync);
    }

    /// <summary>
    /// Turns receipts providers acknowledged into this node's proposal half-blocks and sends them, in the background and
    /// in batches: the first receipt schedules a round <see cref="AccountingOptions.ProposeDelay"/> later, which takes
    /// every delivered receipt without a block (appended concurrently, so the ledger's group commit flushes them together).
    /// </summary>
    public void OnReceiptDelivered(PeerId provider, byte[] receipt)
    {
        if (Interlocked.Exchange(ref _linkScheduled, 1) == 0)
        {
            _proposals.Run("link payments", async ct =>
            {
                try
                {
                    using var wait = CancellationTokenSource.CreateLinkedTokenSource(ct, _linkNow.Token);
                    await Task.Delay(_options.ProposeDelay, _time, wait.Token);
                }
                catch (OperationCanceledException) when (_linkNow.IsCancellationRequested && !ct.IsCancellationRequested)
                {
                    // Stopping: link now rather than after the delay (a clock that is never advanced must not hold up the stop).
                }
                Volatile.Write(ref _linkScheduled, 0);
                await LinkDeliveredAsync(ct);
            });
        }
    }

    /// <summary>
    /// Proposes every delivered receipt that has no block yet (at most <see cref="AccountingOptions.MaxRetriesPerRound"/> a
    /// round): the round's proposals are appended in one group commit (one flush for the round, not one per payment), then
    /// sent concurrently.
    /// </summary>
    private async Task<int> LinkDeliveredAsync(CancellationToken ct)
    {
        if (_recovering)
        {
            return 0; // linked once the chain is recovered (RetryAsync)
        }
        var receipts = new List<Receipt>();
        foreach (var envelope in _ledger.DeliveredReceiptsWithoutBlock(_options.MaxRetriesPerRound))
        {
            // Read back from this node's own ledger, where it was stored as this node signed it: parsed, not verified again.
            if (OwnPaidReceipt(envelope) is { } r)
            {
                receipts.Add(r);
            }
        }
        if (receipts.Count == 0)
        {
            return 0;
        }
        // One block per provider for the round's payments to it (a batch block; a single-payment block for one payment,
        // which older providers read too), split by count and by bytes; all appended in one group commit.
        var payments = new List<(byte[] ReceiptId, IReadOnlyList<byte[]>? Payments, Func<ulong, byte[], SignedBlock> Sign)>();
        foreach (var group in receipts.GroupBy(r => new PeerIdKey(r.Provider)))
        {
            var batches = _options.Batch && KeyCache.TryPeer(group.First().Provider, out var provider)
                && _host.Peers.SupportsProtocol(provider, ChainProtocol.BatchBlocksId);
            foreach (var batch in Batches(group.ToList(), batches ? _options.Chain.MaxPayloadBytes : 0))
            {
                if (batch.Count == 1)
                {
                    var r = batch[0];
                    payments.Add((r.ReceiptId, null, (seq, previous) => SignProposal(r, seq, previous)));
                }
                else
                {
                    var ids = batch.Select(r => r.ReceiptId).ToArray();
                    payments.Add((ChainBlock.BatchIdOf([.. batch.Select(ChainPayment.Of)]), ids,
                        (seq, previous) => Signed(SignedBlock.ProposeBatch(batch, _key, seq, previous, _time.GetUtcNow()))));
                }
            }
        }
        var proposals = _ledger.AppendOwnBatches(payments);
        var linked = await Task.WhenAll(proposals.GroupBy(p => p.Block.Counterparty)
            .Select(g => SendProposalsAsync(g.Key, [.. g.Select(p => p.Block)], ct)));
        return linked.Sum();
    }

    /// <summary>
    /// Sends one provider a round's proposals on one <see cref="ChainProtocol.BatchId"/> stream (one per proposal to a
    /// provider that speaks only <see cref="ChainProtocol.Id"/>) and stores the agreements; returns how many are linked.
    /// </summary>
    private async Task<int> SendProposalsAsync(PeerId provider, List<SignedBlock> proposals, CancellationToken ct)
    {
        var linked = 0;
        var pending = new List<(SignedBlock Proposal, ChainProposal Message)>();
        foreach (var proposal in proposals)
        {
            AfterProposalWritten?.Invoke(proposal);
            if (ProposalMessage(proposal) is { } message)
            {
                pending.Add((proposal, message));
            }
            else
            {
                linked++;
            }
        }
        if (pending.Count == 0)
        {
            return linked;
        }
        var answers = await ExchangeManyAsync(provider, [.. pending.Select(p => p.Message)], ct);
        var agreed = new List<SignedBlock>(pending.Count);
        for (var i = 0; i < pending.Count; i++)
        {
            if (CheckAnswer(pending[i].Proposal, answers[i]) is { } agreement)
            {
                agreed.Add(agreement);
            }
        }
        return linked + StoreAgreements(agreed);
    }

    /// <summary>
    /// Exchanges proposals for answers with one provider, in order, <see cref="ChainProtocol.MaxProposalsPerStream"/> per
    /// <see cref="ChainProtocol.BatchId"/> stream, or one per <see cref="ChainProtocol.Id"/> stream with an older provider;
    /// an answer is null where the exchange failed (the rest are then not sent: they are retried with the unlinked).
    /// </summary>
    internal async Task<ChainAnswer?[]> ExchangeManyAsync(PeerId provider, IReadOnlyList<ChainProposal> messages, CancellationToken ct)
    {
        var answers = new ChainAnswer?[messages.Count];
        var next = 0;
        while (next < messages.Count)
        {
            var before = next;
            try
            {
                using var timeout = new CancellationTokenSource(_options.ExchangeTimeout, _time);
                using var linked = _work.Link(timeout.Token, ct, _proposals.Stopping);
                using var dialReason = DialReason.Use(DialReason.Payment);
                await using var stream = await _host.NewStreamAsync(provider, [ChainProtocol.BatchBlocksId, ChainProtocol.BatchId, ChainProtocol.Id], linked.Token);
                var count = stream.Protocol != ChainProtocol.Id ? Math.Min(messages.Count - next, ChainProtocol.MaxProposalsPerStream) : 1;
                for (var i = 0; i < count; i++)
                {
                    await LengthPrefixed.WriteAsync(stream.Output, ChainCodec.Encode(messages[next + i]), linked.Token);
                }
                await stream.Output.CompleteAsync();
                for (var i = 0; i < count; i++)
                {
                    var reply = await LengthPrefixed.ReadAsync(stream.Input, MaxAnswerBytes, stream.Protocol, linked.Token)
                        ?? throw new ProtocolViolationException(stream.Protocol, "stream ended without an answer");
                    answers[next++] = ChainCodec.TryDecode(reply, MaxAnswerBytes, out ChainAnswer? answer)
                        ? answer
                        : throw new ProtocolViolationException(stream.Protocol, "malformed answer");
                }
            }
            catch (Exception e) when (Failures.IsExpected(e, _work.Stopping))
            {
                LogExchangeFailed(_log, provider, e.Message);
                return answers;
            }
            if (next == before)
            {
                return answers;
            }
        }
        return answers;
    }

    /// <summary>A provider's peer id bytes as a grouping key (by content).</summary>
    private readonly record struct PeerIdKey(string Value)
    {
        public PeerIdKey(byte[] bytes)
            : this(Convert.ToHexString(bytes))
        {
        }
    }

    /// <summary>
    /// Payments to one provider cut into batches of at most <see cref="ChainBlock.MaxPayments"/> whose payments fit
    /// <paramref name="maxPayloadBytes"/> with a block's other fields (0: one payment per block, as before batch blocks,
    /// for a provider that does not read them).
    /// </summary>
    internal static List<List<Receipt>> Batches(List<Receipt> receipts, int maxPayloadBytes)
    {
        var batches = new List<List<Receipt>>();
        List<Receipt>? current = null;
        var bytes = 0;
        foreach (var r in receipts)
        {
            // A payment's MessagePack: array header, two bin8 fields, two integers of at most 9 bytes.
            var cost = 1 + 2 + r.ReceiptId.Length + 2 + r.LeaseId.Length + 9 + 9;
            if (current is null || current.Count >= ChainBlock.MaxPayments || bytes + cost > maxPayloadBytes - BlockOverheadBytes)
            {
                batches.Add(current = []);
                bytes = 0;
            }
            current.Add(r);
            bytes += cost;
        }
        return batches;
    }

    /// <summary>A bound on a batch block's payload beyond its payments (keys 0–11 and the list header).</summary>
    internal const int BlockOverheadBytes = 320;

    /// <summary>A receipt this node signed as the payer, read back from its ledger; null when it is not one.</summary>
    private Receipt? OwnPaidReceipt(byte[] envelopeBytes) =>
        EnvelopeView.TryReadUnbounded(envelopeBytes, out var envelope)
            && SignedEnvelope.TryDeserialize(envelope.Payload, out Receipt? receipt) && receipt.IsWellFormed()
            && receipt.Requester.AsSpan().SequenceEqual(_key.PeerId.Bytes) && KeyCache.TryPeer(receipt.Provider, out _)
            ? receipt
            : null;

    private SignedBlock SignProposal(Receipt r, ulong seq, byte[] previous) => Signed(SignedBlock.Propose(r, _key, seq, previous, _time.GetUtcNow()));

    /// <summary>A block this node just signed, remembered as checked: it comes back in gossip and as the block before the next proposal.</summary>
    private SignedBlock Signed(SignedBlock block)
    {
        _checked.Remember(block);
        return block;
    }

    /// <summary>Half-blocks this node signed and signature checks it made ("verified") or skipped because it made them lately ("remembered").</summary>
    internal (long Verified, long Remembered) BlockChecks => (_checked.Verified, _checked.Remembered);

    private async Task<bool> SendWrittenAsync(SignedBlock proposal, CancellationToken ct)
    {
        AfterProposalWritten?.Invoke(proposal);
        return await SendProposalAsync(proposal, ct);
    }

    /// <summary>Completes when every proposal started so far has been answered or has failed.</summary>
    public Task WhenIdleAsync(CancellationToken ct) => LoopSafeWait.WaitAsync(_proposals.WhenIdleAsync(), ct);

    /// <summary>Appends the proposal for a receipt this node paid (once per receipt) and sends it; true once linked.</summary>
    public async Task<bool> ProposeAsync(byte[] receiptEnvelope, CancellationToken ct)
    {
        if (_recovering)
        {
            return false; // linked once the chain is recovered (RetryAsync)
        }
        var decoded = SignedReceipt.Decode(receiptEnvelope, _options.Credits);
        if (!decoded.IsValid || decoded.Value!.Requester != _key.PeerId)
        {
            return false;
        }
        var r = decoded.Value.Receipt;
        var (proposal, _) = _ledger.AppendOwnBlock(r.ReceiptId, (seq, previous) => SignProposal(r, seq, previous));
        return await SendWrittenAsync(proposal, ct);
    }

    /// <summary>Sends one of this node's proposals with the block before it; stores the agreement. True once linked.</summary>
    public async Task<bool> SendProposalAsync(SignedBlock proposal, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(proposal);
        return ProposalMessage(proposal) is not { } message || TakeAnswer(proposal, await ExchangeAsync(proposal.Counterparty, message, ct));
    }

    /// <summary>The message proposing one of this node's blocks, with the block before it; null when it is linked already.</summary>
    private ChainProposal? ProposalMessage(SignedBlock proposal)
    {
        if (_ledger.AgreementLinking(proposal.Hash) is not null)
        {
            return null;
        }
        var previous = proposal.Seq > 1 ? _ledger.ChainBlockAt(_key.PeerId, proposal.Seq - 1) ?? [] : [];
        return new ChainProposal { Proposal = proposal.EnvelopeBytes, Previous = previous };
    }

    /// <summary>Checks and stores the provider's answer to a proposal (null: none came); true once linked.</summary>
    private bool TakeAnswer(SignedBlock proposal, ChainAnswer? answer) =>
        CheckAnswer(proposal, answer) is { } agreement && StoreAgreements([agreement]) == 1;

    /// <summary>Stores checked agreements in one transaction; how many linked (a conflicting one is a fork proof instead).</summary>
    private int StoreAgreements(IReadOnlyList<SignedBlock> agreements)
    {
        var linked = 0;
        var stored = _ledger.StoreForeignBlocks(agreements, keep: true);
        for (var i = 0; i < agreements.Count; i++)
        {
            if (stored[i].Result == ForeignBlockResult.Conflict)
            {
                Fork(agreements[i], stored[i].Conflicting!);
            }
            else
            {
                linked++;
            }
        }
        return linked;
    }

    /// <summary>The provider's agreement to a proposal, checked (signature, link); null when none came or it does not check.</summary>
    private SignedBlock? CheckAnswer(SignedBlock proposal, ChainAnswer? answer)
    {
        if (answer is null)
        {
            return null;
        }
        if (answer.Status != ChainAnswerStatus.Agreed)
        {
            LogProposalRefused(_log, proposal.Counterparty, proposal.Seq, answer.Detail);
            return null;
        }
        var status = _checked.Decode(answer.Agreement, _options.Chain, out var agreement);
        if (status == BlockStatus.Valid)
        {
            status = proposal.LinkedBy(agreement!);
        }
        if (status != BlockStatus.Valid)
        {
            LogBadAgreement(_log, proposal.Counterparty, status);
            _host.Budgets.Penalise(proposal.Counterparty, Misbehaviour.RefusedProof);
            return null;
        }
        return agreement;
    }

    /// <summary>Opens <see cref="ChainProtocol.Id"/> to the provider and exchanges one proposal for one answer; null when it failed.</summary>
    internal async Task<ChainAnswer?> ExchangeAsync(PeerId provider, ChainProposal message, CancellationToken ct)
    {
        try
        {
            using var timeout = new CancellationTokenSource(_options.ExchangeTimeout, _time);
            using var linked = _work.Link(timeout.Token, ct, _proposals.Stopping);
            using var dialReason = DialReason.Use(DialReason.Payment);
            await using var stream = await _host.NewStreamAsync(provider, [ChainProtocol.Id], linked.Token);
            await LengthPrefixed.WriteAsync(stream.Output, ChainCodec.Encode(message), linked.Token);
            await stream.Output.CompleteAsync();
            var reply = await LengthPrefixed.ReadAsync(stream.Input, MaxAnswerBytes, ChainProtocol.Id, linked.Token)
                ?? throw new ProtocolViolationException(ChainProtocol.Id, "stream ended without an answer");
            return ChainCodec.TryDecode(reply, MaxAnswerBytes, out ChainAnswer? answer)
                ? answer
                : throw new ProtocolViolationException(ChainProtocol.Id, "malformed answer");
        }
        catch (Exception e) when (Failures.IsExpected(e, _work.Stopping))
        {
            LogExchangeFailed(_log, provider, e.Message);
            return null;
        }
    }

    private int MaxAnswerBytes => _options.Chain.MaxBlockBytes + ChainAnswer.MaxDetailLength * 4 + 32;

    private async Task HandleStreamAsync(IStream stream, CancellationToken ct)
    {
        try
        {
            // One proposal on Id; up to MaxProposalsPerStream on BatchId, each answered as it is read, then the end.
            // One proposal on Id; up to MaxProposalsPerStream on BatchId, read to the requester's end, then answered in order
            // (their agreements appended in one group commit).
            var batch = stream.Protocol is ChainProtocol.BatchId or ChainProtocol.BatchBlocksId;
            var max = batch ? ChainProtocol.MaxProposalsPerStream : 1;
            var messages = new List<ChainProposal>();
            while (messages.Count < max
                && await LengthPrefixed.ReadAsync(stream.Input, ChainProtocol.MaxPairBytes(_options.Chain), stream.Protocol, ct) is { } body)
            {
                messages.Add(ChainCodec.TryDecode(body, ChainProtocol.MaxPairBytes(_options.Chain), out ChainProposal? message)
                    ? message
                    : throw new ProtocolViolationException(stream.Protocol, "malformed proposal"));
            }
            if (batch && messages.Count == max
                && await LengthPrefixed.ReadAsync(stream.Input, ChainProtocol.MaxPairBytes(_options.Chain), stream.Protocol, ct) is not null)
            {
                throw new ProtocolViolationException(stream.Protocol, $"more than {ChainProtocol.MaxProposalsPerStream} proposals on one stream");
            }
            var answers = AnswerAll(stream.RemotePeer, messages, out var pairs);
            foreach (var answer in answers)
            {
                Interlocked.Increment(ref answer.Status == ChainAnswerStatus.Agreed ? ref _agreed : ref _refused);
                await LengthPrefixed.WriteAsync(stream.Output, ChainCodec.Encode(answer), ct);
            }
            await stream.Output.CompleteAsync();
            // The stream's linked pairs in one gossip message (one signature for the batch, not one per payment). Pairs of
            // batch blocks go in a message of their own on the same topic (one more topic would cost every node another mesh),
            // sent and advertised only to peers that speak BatchBlocksId: a node built before batch blocks rejects a message
            // holding one as malformed and scores its sender down.
            if (_options.AnnounceBlocks)
            {
                foreach (var (audience, group) in AudienceGroups(pairs.OfType<(SignedBlock Proposal, SignedBlock Agreement)>()))
                {
                    await _bus.PublishAsync(ChainProtocol.BlockBatchesTopic, ChainCodec.Encode(new BlockBatch { Pairs = group }), audience, ct);
                    _instruments.ChainBatchPublished(group.Count);
                }
            }
        }
        catch (ProtocolViolationException e)
        {
            LogViolation(_log, stream.RemotePeer, e.Message);
            _host.Budgets.Penalise(stream.RemotePeer, Misbehaviour.Malformed);
            stream.Reset();
        }
    }

    /// <summary>
    /// A stream's linked pairs as they are gossiped: single-payment pairs in one message for every node, batch-block pairs
    /// (<see cref="ChainBlock.Payments"/>) in another for the nodes that read them (audience <see cref="ChainProtocol.BatchBlocksId"/>);
    /// each in the stream's order, the singles first, and no message without a pair.
    /// </summary>
    internal static IEnumerable<(string? Audience, List<BlockPair> Pairs)> AudienceGroups(IEnumerable<(SignedBlock Proposal, SignedBlock Agreement)> linked)
    {
        List<BlockPair>? singles = null;
        List<BlockPair>? batches = null;
        foreach (var (proposal, agreement) in linked)
        {
            var pair = new BlockPair { First = proposal.EnvelopeBytes, Second = agreement.EnvelopeBytes };
            (AudienceOf(proposal, agreement) is null ? singles ??= [] : batches ??= []).Add(pair);
        }
        if (singles is not null)
        {
            yield return (null, singles);
        }
        if (batches is not null)
        {
            yield return (ChainProtocol.BatchBlocksId, batches);
        }
    }

    /// <summary>Who may be sent this pair: nodes that read batch blocks when either block is one, any node for a single payment's.</summary>
    private static string? AudienceOf(SignedBlock proposal, SignedBlock agreement) =>
        proposal.Block.IsBatch || agreement.Block.IsBatch ? ChainProtocol.BatchBlocksId : null;

    /// <summary>The provider's answer to a proposal from <paramref name="from"/>; the linked pair when it agreed now or before.</summary>
    internal ChainAnswer Answer(PeerId from, ChainProposal message, out (SignedBlock Proposal, SignedBlock Agreement)? pair)
    {
        var answers = AnswerAll(from, [message], out var pairs);
        pair = pairs[0];
        return answers[0];
    }

    /// <summary>
    /// The provider's answers to proposals from <paramref name="from"/>, checked in order; the agreements of those that
    /// check are appended in one group commit (one flush for a stream's proposals, not one each). The linked pairs,
    /// where it agreed now or before, are in <paramref name="pairs"/>.
    /// </summary>
    internal ChainAnswer[] AnswerAll(PeerId from, IReadOnlyList<ChainProposal> messages, out (SignedBlock Proposal, SignedBlock Agreement)?[] pairs)
    {
        var answers = new ChainAnswer[messages.Count];
        pairs = new (SignedBlock, SignedBlock)?[messages.Count];
        var agreeable = new List<(int Index, SignedBlock Proposal)>();
        // The blocks before the proposals, where not held here yet, stored (unkept) together in one transaction once every
        // proposal is checked, not one transaction each; in message order, so a fork among them is met as it was one by one.
        var previousToStore = new List<(int Index, SignedBlock Previous)>();
        for (var i = 0; i < messages.Count; i++)
        {
            if (Check(from, messages[i], out var proposal, out var previous) is { } refusal)
            {
                answers[i] = refusal;
            }
            else
            {
                agreeable.Add((i, proposal!));
                if (previous is not null)
                {
                    previousToStore.Add((i, previous));
                }
            }
        }
        if (previousToStore.Count > 0)
        {
            var stored = _ledger.StoreForeignBlocks([.. previousToStore.Select(p => p.Previous)], keep: false);
            var forkAt = -1;
            for (var k = 0; k < previousToStore.Count && forkAt < 0; k++)
            {
                if (stored[k].Result == ForeignBlockResult.Conflict)
                {
                    Fork(previousToStore[k].Previous, stored[k].Conflicting!);
                    forkAt = previousToStore[k].Index;
                }
            }
            if (forkAt >= 0)
            {
                // As one by one: the proposal whose block before forks is refused, and every later one from its author (a
                // known forker by then); the earlier ones were checked before the fork was met and are agreed to.
                foreach (var (i, _) in agreeable.Where(a => a.Index >= forkAt))
                {
                    answers[i] = i == forkAt ? Refuse("fork") : Refuse("this node holds a fork proof against you");
                }
                agreeable.RemoveAll(a => a.Index >= forkAt);
            }
        }
        if (agreeable.Count == 0)
        {
            return answers;
        }
        // Each proposal is stored with its agreement in one group commit (one transaction and one flush for the stream).
        var agreements = _ledger.StoreAndAgree([.. agreeable.Select(a =>
            (a.Proposal, (Func<ulong, byte[], SignedBlock>)((seq, previousHash) => SignAgreement(from, a.Proposal, seq, previousHash))))]);
        for (var k = 0; k < agreeable.Count; k++)
        {
            var (i, p) = agreeable[k];
            if (agreements[k].Agreement is not { } agreement)
            {
                Fork(p, agreements[k].Conflicting!);
                answers[i] = Refuse("fork");
                continue;
            }
            if (p.LinkedBy(agreement) != BlockStatus.Valid)
            {
                answers[i] = Refuse("this payment is linked to another block of yours already");
                continue;
            }
            pairs[i] = (p, agreement);
            answers[i] = new ChainAnswer { Status = ChainAnswerStatus.Agreed, Agreement = agreement.EnvelopeBytes };
        }
        return answers;
    }

    private SignedBlock SignAgreement(PeerId from, SignedBlock p, ulong seq, byte[] previousHash) => Signed(SignedBlock.Sign(new ChainBlock
    {
        Author = _key.PeerId.ToBytes(),
        Seq = seq,
        Previous = previousHash,
        Counterparty = from.ToBytes(),
        LinkSeq = p.Seq,
        LinkHash = p.Hash,
        Kind = BlockKind.Agreement,
        ReceiptId = p.Block.ReceiptId,
        LeaseId = p.Block.LeaseId,
        Amount = p.Block.Amount,
        FuelUsed = p.Block.FuelUsed,
        TimestampUnixMs = _time.GetUtcNow().ToUnixTimeMilliseconds(),
        Payments = p.Block.Payments,
    }, _key));

    /// <summary>
    /// Checks one proposal from <paramref name="from"/>: the refusal, or null and the proposal to agree to (stored with the
    /// agreement), with the checked block before it in <paramref name="previousToStore"/> when this node does not hold it
    /// as is (the caller stores it).
    /// </summary>
    private ChainAnswer? Check(PeerId from, ChainProposal message, out SignedBlock? agreeable, out SignedBlock? previousToStore)
    {
        agreeable = null;
        previousToStore = null;
        if (_recovering)
        {
            return Refuse("recovering its chain after a lost ledger: propose again later");
        }
        var status = _checked.Decode(message.Proposal, _options.Chain, out var proposal);
        if (status != BlockStatus.Valid)
        {
            _host.Budgets.Penalise(from, Misbehaviour.RefusedProof);
            return Refuse($"proposal: {status}");
        }
        var p = proposal!;
        if (p.Author != from || p.Block.Kind != BlockKind.Proposal || p.Counterparty != _key.PeerId)
        {
            return Refuse("not a proposal from its author to this node");
        }
        if (IsForker(from))
        {
            return Refuse("this node holds a fork proof against you");
        }
        if (p.Seq > 1)
        {
            if (message.Previous.Length == 0)
            {
                return Refuse("the block before the proposal is missing");
            }
            // Usually the block before is one this node countersigned: held, byte for byte, so neither checked nor stored again.
            var previous = _ledger.ChainBlockAt(from, p.Seq - 1) is { } held && held.AsSpan().SequenceEqual(message.Previous)
                ? SignedBlock.DecodeChecked(held)
                : null;
            var previousHeld = previous is not null;
            // Otherwise often one checked here lately (an earlier proposal on this stream, or in the other payee's gossip).
            status = previousHeld ? BlockStatus.Valid : _checked.Decode(message.Previous, _options.Chain, out previous);
            if (status == BlockStatus.Valid)
            {
                status = previous!.Precedes(p);
            }
            if (status != BlockStatus.Valid)
            {
                _host.Budgets.Penalise(from, Misbehaviour.RefusedProof);
                return Refuse($"previous block: {status}");
            }
            if (!previousHeld)
            {
                previousToStore = previous;
            }
        }
        // Every payment (the one of a single-payment block, or each of a batch) must be a receipt recorded here as earned from
        // this requester, with the same lease, amount and fuel; one that is not refuses the whole block, before anything is
        // written. A payment already in another block of ours is refused when the agreement would be appended (StoreAndAgree).
        if (p.Block.Payments is { } payments)
        {
            for (var i = 0; i < payments.Count; i++)
            {
                if (!Earned(from, payments[i]))
                {
                    return Refuse($"no such payment was received here (payment {i} of the batch)");
                }
            }
        }
        else if (!Earned(from, new ChainPayment { ReceiptId = p.Block.ReceiptId, LeaseId = p.Block.LeaseId, Amount = p.Block.Amount, FuelUsed = p.Block.FuelUsed }))
        {
            return Refuse("no such payment was received here");
        }
        agreeable = p;
        return null;
    }

    /// <summary>Whether this node recorded <paramref name="payment"/> as earned from <paramref name="from"/>: same receipt, lease, amount and fuel.</summary>
    private bool Earned(PeerId from, ChainPayment payment)
    {
        // The receipt was checked when it was recorded as earned: read back, it is only compared, not verified again.
        var stored = _ledger.ReceiptOf(payment.ReceiptId, LedgerEntryKind.Earned);
        Receipt? receipt = null;
        if (stored is not null && EnvelopeView.TryReadUnbounded(stored, out var envelope))
        {
            SignedEnvelope.TryDeserialize(envelope.Payload, out receipt);
        }
        return receipt is not null && receipt.Requester.AsSpan().SequenceEqual(from.Bytes) && receipt.Amount == payment.Amount
            && receipt.FuelUsed == payment.FuelUsed && receipt.LeaseId.AsSpan().SequenceEqual(payment.LeaseId);
    }

    private static ChainAnswer Refuse(string detail) => new() { Status = ChainAnswerStatus.Refused, Detail = detail };

    // ------------------------------------------------------------------ gossip: completed payments

    /// <summary>A pair on <see cref="ChainProtocol.BlocksTopic"/>, checked as one pair of a batch is (<see cref="ValidatePair"/>).</summary>
    private TopicVerdict ValidateBlocks(TopicMessage message, out GossipedPairs? validated)
    {
        validated = null;
        if (!ChainCodec.TryDecode(message.Data, ChainProtocol.MaxPairBytes(_options.Chain), out BlockPair? pair) || message.Author is not { } author)
        {
            return TopicVerdict.Reject;
        }
        if (message.ReceivedFrom != _key.PeerId)
        {
            // A batch block's payments each cost a token, as on the batch topic (the bus took one for the message).
            for (var i = PaymentsIn([pair]); i > 1; i--)
            {
                if (!_host.Budgets.TryTake(message.ReceivedFrom, PeerBudgets.ChainRecords, penalise: author == message.ReceivedFrom))
                {
                    return TopicVerdict.Ignore;
                }
            }
        }
        var verdict = ValidatePair(pair, author, out var checkedPair);
        validated = verdict == TopicVerdict.Accept ? new GossipedPairs([checkedPair]) : null;
        return verdict;
    }

    /// <summary>
    /// A batch is accepted only when every pair in it is (<see cref="ValidatePair"/>), all agreed by the message's author;
    /// one bad pair rejects the whole message. Each pair beyond the first spends a further token of the sender's
    /// <see cref="PeerBudgets.ChainRecords"/> budget before any signature is checked (the bus took one for the message), so a
    /// batch costs a sender what its pairs would have cost one by one; over budget, the batch is ignored. What an accepted
    /// batch checked to (its blocks, decoded and verified) goes to the handler as it is: the batch is decoded once.
    /// </summary>
    private TopicVerdict ValidateBatch(TopicMessage message, out GossipedPairs? validated)
    {
        validated = null;
        if (!ChainCodec.TryDecode(message.Data, ChainProtocol.MaxBatchBytes(_options.Chain), out BlockBatch? batch) || message.Author is not { } author)
        {
            return TopicVerdict.Reject;
        }
        if (message.ReceivedFrom != _key.PeerId)
        {
            // One token per payment (a batch block's payments each count), before any signature is checked.
            var tokens = PaymentsIn(batch.Pairs);
            for (var i = 1; i < tokens; i++)
            {
                if (!_host.Budgets.TryTake(message.ReceivedFrom, PeerBudgets.ChainRecords, penalise: author == message.ReceivedFrom))
                {
                    _instruments.ChainBatchOverBudget(batch.Pairs.Count);
                    return TopicVerdict.Ignore;
                }
            }
        }
        var verdict = TopicVerdict.Accept;
        var pairs = new (SignedBlock Proposal, SignedBlock Agreement)[batch.Pairs.Count];
        for (var i = 0; i < pairs.Length; i++)
        {
            switch (ValidatePair(batch.Pairs[i], author, out pairs[i]))
            {
                case TopicVerdict.Reject:
                    return TopicVerdict.Reject;
                case TopicVerdict.Ignore:
                    verdict = TopicVerdict.Ignore;
                    break;
            }
        }
        validated = verdict == TopicVerdict.Accept ? new GossipedPairs(pairs) : null;
        return verdict;
    }

    /// <summary>
    /// The payments a batch message claims, read from its proposals without checking a signature (a block that does not
    /// parse counts one, and is rejected when checked): what the sender's budget is charged, so one batch block costs what
    /// its payments cost as single blocks.
    /// </summary>
    private int PaymentsIn(List<BlockPair> pairs)
    {
        var count = 0;
        foreach (var pair in pairs)
        {
            count += pair.First.Length <= _options.Chain.MaxBlockBytes && EnvelopeView.TryReadUnbounded(pair.First, out var envelope)
                && envelope.Payload.Length <= _options.Chain.MaxPayloadBytes
                && SignedEnvelope.TryDeserialize(envelope.Payload, out ChainBlock? block) && block.Payments is { Count: > 0 } payments
                ? Math.Min(payments.Count, ChainBlock.MaxPayments)
                : 1;
        }
        return count;
    }

    /// <summary>Both blocks valid (signatures checked, or held or checked here lately), linked, and agreed by the gossip's author.</summary>
    private TopicVerdict ValidatePair(BlockPair pair, PeerId author, out (SignedBlock Proposal, SignedBlock Agreement) checkedPair)
    {
        checkedPair = default;
        if (DecodeGossiped(pair.First, out var proposal) != BlockStatus.Valid
            || DecodeGossiped(pair.Second, out var agreement) != BlockStatus.Valid
            || proposal!.LinkedBy(agreement!) != BlockStatus.Valid
            || author != agreement!.Author)
        {
            // Only the payee publishes its payment, and only as a linked pair.
            return TopicVerdict.Reject;
        }
        checkedPair = (proposal, agreement);
        return IsForker(proposal.Author) || IsForker(agreement.Author) ? TopicVerdict.Ignore : TopicVerdict.Accept;
    }

    /// <summary>
    /// The pairs of one accepted gossip message, as its validator checked them. One holding a batch block is forwarded,
    /// advertised and served only to peers that speak <see cref="ChainProtocol.BatchBlocksId"/> (on either block topic,
    /// whoever published it): a node built before batch blocks would reject it and score the forwarder down.
    /// </summary>
    private sealed record GossipedPairs(IReadOnlyList<(SignedBlock Proposal, SignedBlock Agreement)> Pairs) : ITopicAudience
    {
        public string? Audience => Pairs.Any(p => AudienceOf(p.Proposal, p.Agreement) is not null) ? ChainProtocol.BatchBlocksId : null;
    }

    /// <summary>
    /// Whether every gossiped block verified here is remembered (a provider: a payer's blocks with other payees come again
    /// in its proposals here, as the block before them), or only those that name this node or a party it holds blocks of
    /// (a node that does not provide: nearly all it verifies is strangers paying strangers, met once). Set by the node
    /// that builds this service; true unless told.
    /// </summary>
    internal bool RemembersEveryGossipedBlock { get; set; } = true;

    private BlockStatus DecodeGossiped(byte[] envelope, out SignedBlock? block) =>
        DecodeGossiped(envelope, _options.Chain, _key.PeerId, hash => _ledger.ChainBlockByHash(hash), out block, _checked,
            RemembersEveryGossipedBlock ? null : _ledger.HoldsBlocksOf);

    /// <summary>
    /// Decodes and checks a gossiped block. One naming <paramref name="self"/> (its own, or a counterparty's linked to one
    /// of its own) that <paramref name="heldByHash"/> holds byte for byte was signed there or checked when it was stored:
    /// it is not verified again (a requester hears each of its payments back from the payee). Any other block, and any
    /// other bytes, is verified. With <paramref name="known"/>, bytes signed or checked there lately are taken as checked
    /// first, and a block verified is remembered there; with <paramref name="holdsBlocksOf"/>, only when it may come again:
    /// one naming <paramref name="self"/>, or one of whose author or counterparty <paramref name="holdsBlocksOf"/> (its
    /// blocks with others come again in its next proposal here). A stranger's payment to a stranger, nearly all of what gossip brings, is met
    /// once (stop 27 counted 15,840 such blocks remembered at 200 nodes and one of them met again): remembering it filled
    /// every node's table, lease or not, with digests never asked for again.
    /// </summary>
    internal static BlockStatus DecodeGossiped(byte[] envelope, ChainOptions options, PeerId self, Func<byte[], byte[]?> heldByHash, out SignedBlock? block,
        CheckedBlocks? known = null, Func<PeerId, bool>? holdsBlocksOf = null)
    {
        if (known is not null && known.TryGet(envelope, options, out block))
        {
            return BlockStatus.Valid;
        }
        if (envelope.Length <= options.MaxBlockBytes && SignedBlock.DecodeChecked(envelope) is { } parsed
            && (parsed.Author == self || parsed.Counterparty == self)
            && heldByHash(parsed.Hash) is { } held && held.AsSpan().SequenceEqual(envelope))
        {
            block = parsed;
            return BlockStatus.Valid;
        }
        return known is not null
            ? known.Decode(envelope, options, out block, b => b.Author == self || b.Counterparty == self
                || holdsBlocksOf is null || holdsBlocksOf(b.Author) || holdsBlocksOf(b.Counterparty))
            : SignedBlock.Decode(envelope, options, out block);
    }

    /// <summary>Whether this node holds exactly these bytes as the block with this hash.</summary>
    private bool HeldAsIs(SignedBlock block) =>
        _ledger.ChainBlockByHash(block.Hash) is { } held && held.AsSpan().SequenceEqual(block.EnvelopeBytes);

    /// <summary>Keeps an accepted message's pairs (on either block topic), as its validator checked them.</summary>
    private ValueTask OnPairsAsync(TopicMessage message, GossipedPairs validated, CancellationToken ct)
    {
        KeepGossiped(validated.Pairs);
        return ValueTask.CompletedTask;
    }

    /// <summary>
    /// Keeps the blocks of a gossiped message's pairs, checked by the validator already, where a fork could meet one held
    /// here: all of them in one transaction (<see cref="CreditLedger.StoreForeignBlocks"/>, in the message's order), not one
    /// each, so a batch of payments costs one commit and its pages are written once. Whether this node holds an author's
    /// blocks is asked once per author and message: a block is kept only for an author held before, so what the message
    /// stores never changes the answer for a later block of it.
    /// </summary>
    private void KeepGossiped(IReadOnlyList<(SignedBlock Proposal, SignedBlock Agreement)> pairs)
    {
        var keep = new List<SignedBlock>();
        Dictionary<PeerId, bool>? held = null;
        foreach (var (proposal, agreement) in pairs)
        {
            foreach (var block in (ReadOnlySpan<SignedBlock>)[proposal, agreement])
            {
                // Kept only for authors this node holds blocks of; a counterparty's block linked to one of ours is usually
                // held as is already (stored when it linked).
                if (block.Author == _key.PeerId || (block.Counterparty == _key.PeerId && HeldAsIs(block)))
                {
                    continue;
                }
                held ??= [];
                if (!held.TryGetValue(block.Author, out var holds))
                {
                    held[block.Author] = holds = _ledger.HoldsBlocksOf(block.Author);
                }
                if (holds)
                {
                    keep.Add(block);
                }
            }
        }
        if (keep.Count == 0)
        {
            return;
        }
        var results = _ledger.StoreForeignBlocks(keep, keep: false);
        for (var i = 0; i < keep.Count; i++)
        {
            if (results[i].Result == ForeignBlockResult.Conflict)
            {
                Fork(keep[i], results[i].Conflicting!);
            }
        }
    }

    // ------------------------------------------------------------------ fork proofs

    /// <summary>Two blocks of one author at one seq: keep the proof, refuse the forker, tell everyone.</summary>
    private void Fork(SignedBlock seen, byte[] heldEnvelope)
    {
        if (SignedBlock.Decode(heldEnvelope, new ChainOptions { MaxBlockBytes = int.MaxValue, MaxPayloadBytes = int.MaxValue }, out var held) != BlockStatus.Valid
            || ForkProof.From(seen, held!, out var proof) != BlockStatus.Valid)
        {
            return;
        }
        if (Accept(proof!))
        {
            LogForkFound(_log, proof!.Author, proof.Seq);
            _work.Run("publish fork proof", ct => _bus.PublishAsync(ChainProtocol.ForksTopic, proof!.Encoded, ct).AsTask());
        }
    }

    /// <summary>Records a checked proof; false when the author was known to have forked.</summary>
    private bool Accept(ForkProof proof)
    {
        lock (_gate)
        {
            if (!_forkers.Add(proof.Author))
            {
                return false;
            }
        }
        _ledger.RecordFork(proof);
        _reputation.Refuse(proof.Author, $"signed two blocks at seq {proof.Seq} (fork proof)");
        ForkFound?.Invoke(proof);
        return true;
    }

    private TopicVerdict ValidateFork(TopicMessage message, out ForkProof? proof)
    {
        var status = ForkProof.Check(message.Data, _options.Chain, out proof);
        if (status != BlockStatus.Valid)
        {
            // A proof that does not check is never forwarded; the gossip layer lowers the sender's score, and its author
            // (who signed the gossip message) loses its standing here.
            if (message.Author is { } author && author != _key.PeerId)
            {
                _reputation.Refuse(author, $"published a fork proof that does not check ({status})");
            }
            return TopicVerdict.Reject;
        }
        return IsForker(proof!.Author) ? TopicVerdict.Ignore : TopicVerdict.Accept;
    }

    /// <summary>Records a proof its validator checked (its two signatures are not checked again).</summary>
    private ValueTask OnForkAsync(TopicMessage message, ForkProof proof, CancellationToken ct)
    {
        if (Accept(proof))
        {
            LogForkReceived(_log, proof.Author, proof.Seq, message.ReceivedFrom);
        }
        return ValueTask.CompletedTask;
    }

    // ------------------------------------------------------------------ recovery

    private async Task RetryPeriodicallyAsync(CancellationToken ct)
    {
        while (!ct.IsCancellationRequested)
        {
            await RetryAsync(ct);
            await Task.Delay(_options.RetryInterval, _time, ct);
        }
    }

    /// <summary>
    /// Links what is not linked yet: receipts delivered without a block (a crash after the acknowledgement) get their
    /// proposal, and proposals without an agreement (a crash after writing, a provider away) are sent again. Returns how
    /// many are linked now.
    /// </summary>
    public async Task<int> RetryAsync(CancellationToken ct)
    {
        var linked = await LinkDeliveredAsync(ct);
        foreach (var bytes in _ledger.UnlinkedProposals(_options.MaxRetriesPerRound))
        {
            if (SignedBlock.DecodeChecked(bytes) is { } proposal && !IsForker(proposal.Counterparty))
            {
                linked += await SendProposalAsync(proposal, ct) ? 1 : 0;
            }
        }
        return linked;
    }

    public async ValueTask DisposeAsync()
    {
        _host.RemoveStreamHandler(ChainProtocol.Id);
        _host.RemoveStreamHandler(ChainProtocol.BatchId);
        _host.RemoveStreamHandler(ChainProtocol.BatchBlocksId);
        _host.RemoveStreamHandler(ChainQueryProtocol.Id);
        _host.RemoveStreamHandler(ChainHistoryProtocol.Id);
        _blocks?.Dispose();
        _batches?.Dispose();
        _forks?.Dispose();
        // Proposals under way, or waiting for their batch, are made and sent first (each exchange bounded by ExchangeTimeout),
        // so a short-lived requester links before it exits.
        _linkNow.Cancel(); // not CancelAsync: that runs the callbacks on the thread pool, off a simulation's event loop
        await _proposals.WhenIdleAsync();
        _linkNow.Dispose();
        await _proposals.DisposeAsync();
        await _work.DisposeAsync();
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "{Provider} refused proposal {Seq}: {Detail}")]
    private static partial void LogProposalRefused(ILogger logger, PeerId provider, ulong seq, string detail);

    [LoggerMessage(Level = LogLevel.Debug, Message = "{Provider} answered with an agreement that does not link: {Status}")]
    private static partial void LogBadAgreement(ILogger logger, PeerId provider, BlockStatus status);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Chain exchange with {Provider} failed: {Reason}")]
    private static partial void LogExchangeFailed(ILogger logger, PeerId provider, string reason);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Chain protocol violation by {Peer}: {Reason}")]
    private static partial void LogViolation(ILogger logger, PeerId peer, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Author} signed two blocks at seq {Seq}: fork proof kept, published, and the author refused")]
    private static partial void LogForkFound(ILogger logger, PeerId author, ulong seq);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Fork proof against {Author} (seq {Seq}) from {From} checked: author refused")]
    private static partial void LogForkReceived(ILogger logger, PeerId author, ulong seq, PeerId from);
}
