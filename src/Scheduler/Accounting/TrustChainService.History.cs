using System.Security.Cryptography;
using Microsoft.Extensions.Logging;
using Potluck.Protocol;
using Potluck.Protocol.Framing;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Runtime;

namespace Potluck.Scheduler.Accounting;

/// <summary>
/// History checks (<see cref="ChainHistoryProtocol"/>). As a provider: a requester with no standing here first-hand is
/// served on a stranger's terms, and its own chain is checked in the background: its head, then a sample of seqs chosen
/// with security randomness, each block with the counterparty's linked half (<see cref="ChainHistoryCheck.Verify"/>). Its
/// verified earnings count only from payers in good standing here (so payments among Sybils count nothing); once they reach
/// <see cref="ChainHistoryOptions.MinVerifiedEarned"/> the requester is served beyond a stranger's terms
/// (<see cref="HasVerifiedStanding"/>). A history that does not check costs the requester its peer score.
/// As a requester: answers such queries from its own chain.
/// </summary>
public sealed partial class TrustChainService
{
    private readonly Dictionary<PeerId, (DateTimeOffset At, bool Standing, long Credit)> _histories = [];
    private const int MaxConcurrentHistoryChecks = 8;
    private readonly HashSet<PeerId> _checking = [];
    private readonly Lock _vouchGate = new();
    private VouchBook? _vouches;
    private long _historiesVerified;
    private long _historiesRefused;

    /// <summary>Histories checked that showed verified standing.</summary>
    public long HistoriesVerified => Interlocked.Read(ref _historiesVerified);

    /// <summary>Histories refused (forged, replayed, another identity's, a fork) or showing no verified standing.</summary>
    public long HistoriesRefused => Interlocked.Read(ref _historiesRefused);

    /// <summary>
    /// As a provider: whether <paramref name="requester"/>'s own chain showed verified standing (checked within
    /// <see cref="ChainHistoryOptions.CacheFor"/>). When there is no fresh verdict, a check begins in the background and
    /// the answer is false until it ends: the request at hand is served on a stranger's terms.
    /// </summary>
    public bool HasVerifiedStanding(PeerId requester)
    {
        var options = _options.History;
        if (!options.Enabled || IsForker(requester))
        {
            return false;
        }
        var now = _time.GetUtcNow();
        lock (_gate)
        {
            if (_histories.TryGetValue(requester, out var verdict) && now - verdict.At < options.CacheFor)
            {
                return verdict.Standing;
            }
            // At most MaxConcurrentHistoryChecks at once: a flood of fresh identities costs a few streams, not one each.
            if (_checking.Count >= MaxConcurrentHistoryChecks || !_checking.Add(requester))
            {
                return false;
            }
        }
        _work.Run("check a requester's history", async ct =>
        {
            try
            {
                await CheckHistoryAsync(requester, ct);
            }
            finally
            {
                lock (_gate)
                {
                    _checking.Remove(requester);
                }
            }
        });
        return false;
    }

    /// <summary>
    /// As a provider: the credit <paramref name="requester"/>'s own chain earns it here beyond a stranger's limit
    /// (<see cref="HistoryCredit"/>; kept with the verdict for <see cref="ChainHistoryOptions.CacheFor"/>). 0 for a forker,
    /// and while there is no fresh verdict: a check then begins in the background (as <see cref="HasVerifiedStanding"/>).
    /// </summary>
    public long VerifiedCredit(PeerId requester)
    {
        var options = _options.History;
        if (!options.Enabled || IsForker(requester))
        {
            return 0;
        }
        lock (_gate)
        {
            if (_histories.TryGetValue(requester, out var verdict) && _time.GetUtcNow() - verdict.At < options.CacheFor)
            {
                return verdict.Credit;
            }
        }
        HasVerifiedStanding(requester); // no fresh verdict: starts a check (bounded as there)
        return 0;
    }

    /// <summary>Checks <paramref name="requester"/>'s chain now and records the verdict; the verified earnings (0 when refused).</summary>
    public async Task<long> CheckHistoryAsync(PeerId requester, CancellationToken ct)
    {
        var options = _options.History;
        long earned = 0;
        long contribution = 0;
        List<VerifiedPayment> payments = [];
        var status = HistoryStatus.Valid;
        var head = await AskHistoryAsync(requester, [], ct);
        if (head is { Status: HistoryStatus.Valid, Head: { } top })
        {
            var seqs = ChainHistoryCheck.Sample(top.Seq, options.Samples, n => RandomBelow(n));
            var sample = await AskHistoryAsync(requester, seqs, ct);
            if (sample is null)
            {
                return 0; // unreachable or stopping: no verdict, asked again on its next request
            }
            status = sample.Value.Status;
            if (status == HistoryStatus.Valid)
            {
                payments = sample.Value.Payments;
                earned = ChainHistoryCheck.VerifiedEarnings(payments, Backed);
            }
        }
        else if (head is { } refused)
        {
            status = refused.Status;
        }
        else
        {
            return 0;
        }
        var standing = status == HistoryStatus.Valid && earned >= options.MinVerifiedEarned;
        if (status != HistoryStatus.Valid)
        {
            _host.Budgets.Penalise(requester, Misbehaviour.RefusedProof);
            LogHistoryRefused(_log, requester, status);
        }
        Interlocked.Increment(ref standing ? ref _historiesVerified : ref _historiesRefused);
        // The extra credit is kept with the verdict; none without standing, for a forker, or with audit violations here.
        // Each payer's surplus here backs it only as far as other requesters still borrowing on it have not taken it.
        long credit = 0;
        lock (_vouchGate)
        {
            _vouches ??= new VouchBook(options.MaxCached, new LedgerVouchStore(_ledger)); // the split survives a restart
            if (standing && !IsForker(requester) && _ledger.Requester(requester).Violations == 0)
            {
                var counted = new Dictionary<PeerId, long>();
                contribution = HistoryCredit.Contribution(payments, _key.PeerId,
                    payer => _vouches.Available(payer, requester, Backing(payer), other => other != requester && StillBorrowing(other)), counted);
                credit = HistoryCredit.Extra(contribution, options.CreditShare, options.MaxCredit);
                if (credit > 0)
                {
                    _vouches.Set(requester, counted);
                }
                else
                {
                    _vouches.Release(requester);
                }
            }
            else
            {
                _vouches.Release(requester);
            }
        }
        lock (_gate)
        {
            if (_histories.Count >= options.MaxCached && !_histories.ContainsKey(requester))
            {
                _histories.Remove(_histories.MinBy(h => h.Value.At).Key);
            }
            _histories[requester] = (_time.GetUtcNow(), standing, credit);
        }
        return standing ? earned : 0;
    }

    /// <summary>A payer whose payments count: this node, or a requester in good standing here first-hand and not a forker.</summary>
    private bool Backed(PeerId payer)
    {
        if (payer == _key.PeerId)
        {
            return true;
        }
        if (IsForker(payer))
        {
            return false;
        }
        var record = _ledger.Requester(payer);
        return record.Supplied > 0 && record.Debt <= 0 && record.Violations == 0;
    }

    /// <summary>
    /// What a payer can vouch for here (<see cref="HistoryCredit.Contribution"/>): its surplus with this node first-hand
    /// (supplied beyond what it took) when it is in good standing (<see cref="Backed"/>), else 0. This node's own payments
    /// are in the requester's record already and are left out before this is asked.
    /// </summary>
    private long Backing(PeerId payer)
    {
        if (payer == _key.PeerId || !Backed(payer))
        {
            return 0;
        }
        return Math.Max(0, -_ledger.Requester(payer).Debt);
    }

    /// <summary>
    /// Whether a requester still borrows on what backed it (<see cref="VouchBook"/>): its verdict is fresh, or it owes here
    /// (took more than it supplied). Under <see cref="_vouchGate"/>.
    /// </summary>
    private bool StillBorrowing(PeerId requester)
    {
        lock (_gate)
        {
            if (_histories.TryGetValue(requester, out var verdict) && _time.GetUtcNow() - verdict.At < _options.History.CacheFor && verdict.Credit > 0)
            {
                return true;
            }
        }
        return _ledger.Requester(requester).Debt > 0;
    }

    private static ulong RandomBelow(ulong n)
    {
        Span<byte> bytes = stackalloc byte[8];
        var limit = ulong.MaxValue - (ulong.MaxValue % n);
        while (true)
        {
            RandomNumberGenerator.Fill(bytes);
            var v = BitConverter.ToUInt64(bytes);
            if (v < limit)
            {
                return v % n;
            }
        }
    }

    private async Task<(HistoryStatus Status, SignedBlock? Head, List<VerifiedPayment> Payments)?> AskHistoryAsync(
        PeerId requester, List<ulong> seqs, CancellationToken ct)
    {
        try
        {
            using var timeout = new CancellationTokenSource(_options.ExchangeTimeout, _time);
            using var linked = _work.Link(timeout.Token, ct);
            using var dialReason = DialReason.Use(DialReason.Payment);
            await using var stream = await _host.NewStreamAsync(requester, [ChainHistoryProtocol.Id], linked.Token);
            await LengthPrefixed.WriteAsync(stream.Output, ChainCodec.Encode(new ChainHistoryQuery { Seqs = seqs }), linked.Token);
            await stream.Output.CompleteAsync();
            var reply = await LengthPrefixed.ReadAsync(stream.Input, ChainRecovery.MaxAnswerBytes(_options.Chain, Math.Max(1, seqs.Count)),
                ChainHistoryProtocol.Id, linked.Token);
            if (reply is null)
            {
                return (HistoryStatus.Malformed, null, []);
            }
            var status = ChainHistoryCheck.Verify(requester, seqs, reply, _options.Chain, seq => _ledger.ChainBlockAt(requester, seq),
                out var payments, out var head);
            return (status, head, payments);
        }
        catch (ProtocolViolationException)
        {
            return (HistoryStatus.Malformed, null, []);
        }
        catch (Exception e) when (Failures.IsExpected(e, _work.Stopping))
        {
            LogExchangeFailed(_log, requester, e.Message);
            return null;
        }
    }

    /// <summary>As a requester: the blocks of this node's chain at the seqs asked (none: the head), each with its linked half.</summary>
    private async Task HandleHistoryAsync(IStream stream, CancellationToken ct)
    {
        try
        {
            var body = await LengthPrefixed.ReadAsync(stream.Input, ChainHistoryProtocol.MaxQueryBytes, ChainHistoryProtocol.Id, ct);
            if (body is null)
            {
                return;
            }
            if (!ChainCodec.TryDecode(body, ChainHistoryProtocol.MaxQueryBytes, out ChainHistoryQuery? query))
            {
                throw new ProtocolViolationException(ChainHistoryProtocol.Id, "malformed history query");
            }
            var seqs = query.Seqs.Count == 0 ? [_ledger.ChainHead().Seq] : query.Seqs.Distinct().ToList();
            var blocks = new List<byte[]>();
            var links = new List<byte[]>();
            foreach (var seq in seqs)
            {
                if (seq is 0 or >= long.MaxValue || _ledger.ChainBlockAt(_key.PeerId, seq) is not { } bytes || SignedBlock.DecodeChecked(bytes) is not { } block)
                {
                    continue;
                }
                blocks.Add(bytes);
                links.Add((block.Block.Kind == BlockKind.Proposal ? _ledger.AgreementLinking(block.Hash) : _ledger.ChainBlockByHash(block.Block.LinkHash)) ?? []);
            }
            await LengthPrefixed.WriteAsync(stream.Output, ChainCodec.Encode(new ChainQueryAnswer { Blocks = blocks, Links = links }), ct);
            await stream.Output.CompleteAsync();
        }
        catch (ProtocolViolationException e)
        {
            LogViolation(_log, stream.RemotePeer, e.Message);
            _host.Budgets.Penalise(stream.RemotePeer, Misbehaviour.Malformed);
            stream.Reset();
        }
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "The history {Requester} presented did not check: {Status}")]
    private static partial void LogHistoryRefused(ILogger logger, PeerId requester, HistoryStatus status);
}
