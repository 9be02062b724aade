using Potluck.Protocol.Identity;

namespace Potluck.Scheduler.Accounting;

/// <summary>
/// Credit from verified history: how much more than a stranger's allowance a provider extends to a requester whose own
/// chain (<see cref="ChainHistoryCheck"/>) shows verified contribution. Pure functions of the checked payments and what the
/// provider knows first-hand; every sum saturates instead of overflowing.
/// <para>
/// Why nobody mints credit with it (issue 8, deliverable 5: no identity or coalition gets more verified fuel from honest
/// providers than it supplied in verified fuel plus the allowances honest providers chose to extend). At one provider P,
/// the extra credit of a requester X is at most min(<see cref="ChainHistoryOptions.MaxCredit"/>,
/// <see cref="ChainHistoryOptions.CreditShare"/> × c), where c (<see cref="Contribution"/>) counts X's sampled earnings
/// only from payers in good standing with P first-hand (they supplied P at least what they took, no audit violation, no
/// fork proof), and from each payer at most that payer's surplus with P (what it supplied P beyond what it took): so every
/// unit counted is backed by work P itself verified and paid for, done by the payer, and a coalition of identities paying
/// each other with nothing supplied to P counts nothing. P's own payments and X's payments to P are left out (they are in
/// X's first-hand record already). X's sampled spending (to anyone but P) is subtracted. The extra is a limit on X's debt
/// here, which only grows as X borrows: a unit of verified contribution is borrowed against at most once at P.
/// </para>
/// <para>
/// What it does not give: the same contribution counts at each provider separately, so across n providers an identity
/// can borrow up to n × min(cap, share × c) besides n stranger allowances; hence the default share ¼ (four providers that
/// all see the same history lend together about what it supplied) and a cap of ten credits per provider. The sample (16
/// seqs and the head) can miss spending: a verdict counts at most the earnings sampled, so over repeated checks the extra
/// at one provider never exceeds share × the verified earnings, though it may exceed share × net contribution when
/// spending hides from the sample. One payer in good standing can vouch with the same surplus for several identities
/// only one after another: <see cref="VouchBook"/> divides it among the requesters still borrowing on it, and keeps the
/// split in the ledger (<see cref="IVouchStore"/>), so a restart does not divide it afresh.
/// </para>
/// </summary>
public static class HistoryCredit
{
    /// <summary>
    /// Net verified contribution, in micro-credits: earnings in <paramref name="payments"/> from each payer, up to what
    /// <paramref name="backing"/> says that payer can vouch for here (0: not in good standing), less all sampled spending,
    /// leaving out payments to and from <paramref name="self"/>; never negative.
    /// </summary>
    public static long Contribution(IEnumerable<VerifiedPayment> payments, PeerId self, Func<PeerId, long> backing) =>
        Contribution(payments, self, backing, null);

    /// <param name="counted">When given, filled with what was counted from each payer (for <see cref="VouchBook"/>).</param>
    public static long Contribution(IEnumerable<VerifiedPayment> payments, PeerId self, Func<PeerId, long> backing, Dictionary<PeerId, long>? counted)
    {
        ArgumentNullException.ThrowIfNull(payments);
        ArgumentNullException.ThrowIfNull(backing);
        var earnedFrom = new Dictionary<PeerId, long>();
        long spent = 0;
        foreach (var p in payments)
        {
            if (p.Counterparty == self || p.Amount <= 0)
            {
                continue;
            }
            if (p.Earned)
            {
                earnedFrom[p.Counterparty] = Add(earnedFrom.GetValueOrDefault(p.Counterparty), p.Amount);
            }
            else
            {
                spent = Add(spent, p.Amount);
            }
        }
        long earned = 0;
        foreach (var (payer, amount) in earnedFrom)
        {
            var share = Math.Min(amount, Math.Max(0, backing(payer)));
            earned = Add(earned, share);
            if (counted is not null && share > 0)
            {
                counted[payer] = share;
            }
        }
        return Math.Max(0, earned - spent);
    }

    /// <summary>
    /// The extra credit for a contribution: ⌊<paramref name="contribution"/> × <paramref name="share"/>⌋ in 128-bit integers
    /// (the share rounded down to parts per million), at most <paramref name="cap"/>; 0 for anything not positive.
    /// </summary>
    public static long Extra(long contribution, double share, long cap)
    {
        if (contribution <= 0 || cap <= 0 || !(share > 0))
        {
            return 0;
        }
        var ppm = (long)Math.Floor(Math.Min(share, 1) * 1_000_000);
        var extra = (Int128)contribution * ppm / 1_000_000;
        return extra >= cap ? cap : (long)extra;
    }

    /// <summary>The credit limit here: the stranger's allowance plus the extra, saturating.</summary>
    public static long Limit(long strangerLimit, long extra) => Add(Math.Max(0, strangerLimit), Math.Max(0, extra));

    internal static long Add(long a, long b) => a > long.MaxValue - b ? long.MaxValue : a + b;
}

/// <summary>
/// What each payer's surplus at this provider vouches for, by requester: so that one payer in good standing cannot back
/// several identities with the same surplus at once. A payer's surplus available to a requester is the surplus less what it
/// already backs for other requesters still <em>live</em> (a fresh verdict, or still owing here: borrowing on it); entries of
/// requesters no longer live are dropped as they are met. At most <c>maxEntries</c> (payer, requester) entries; beyond that a
/// new one backs nothing. With a <see cref="IVouchStore"/>, every change is written through and the entries are read back
/// when the book is made: after a restart a surplus still backs what it backed (a requester still owing here stays live),
/// so a Sybil twin checked after the restart gets only what is left of it. Not thread-safe: the caller locks.
/// </summary>
public sealed class VouchBook
{
    private readonly Dictionary<PeerId, Dictionary<PeerId, long>> _byPayer = [];
    private readonly Dictionary<PeerId, List<PeerId>> _payersOf = [];
    private readonly int maxEntries;
    private readonly IVouchStore? _store;

    /// <param name="maxEntries">The most (payer, requester) entries held.</param>
    /// <param name="store">Where the split is kept across restarts; null keeps it in memory only.</param>
    public VouchBook(int maxEntries, IVouchStore? store = null)
    {
        this.maxEntries = maxEntries;
        _store = store;
        if (store is null)
        {
            return;
        }
        foreach (var (payer, requester, amount) in store.Load(maxEntries))
        {
            if (amount > 0 && Count < maxEntries && Backs(payer, requester) == 0)
            {
                Add(payer, requester, amount);
            }
        }
    }

    /// <summary>(payer, requester) entries held.</summary>
    public int Count { get; private set; }

    /// <summary>What <paramref name="payer"/>'s <paramref name="surplus"/> can still back for <paramref name="requester"/>.</summary>
    public long Available(PeerId payer, PeerId requester, long surplus, Func<PeerId, bool> live)
    {
        ArgumentNullException.ThrowIfNull(live);
        if (surplus <= 0)
        {
            return 0;
        }
        long backed = 0;
        if (_byPayer.TryGetValue(payer, out var backs))
        {
            foreach (var (other, amount) in backs.ToList())
            {
                if (other == requester)
                {
                    continue; // its own earlier allocation is replaced by this verdict
                }
                if (live(other))
                {
                    backed = HistoryCredit.Add(backed, amount);
                }
                else
                {
                    Remove(payer, other);
                    _store?.Remove(payer, other);
                }
            }
        }
        if (Count >= maxEntries && !(_byPayer.TryGetValue(payer, out backs) && backs.ContainsKey(requester)))
        {
            return 0;
        }
        return Math.Max(0, surplus - backed);
    }

    /// <summary>Records what <paramref name="requester"/>'s verdict counted from each payer, replacing what it held before.</summary>
    public void Set(PeerId requester, IReadOnlyDictionary<PeerId, long> counted)
    {
        ArgumentNullException.ThrowIfNull(counted);
        var had = ReleaseCore(requester);
        var held = new Dictionary<PeerId, long>();
        foreach (var (payer, amount) in counted)
        {
            if (amount <= 0 || Count >= maxEntries)
            {
                continue;
            }
            Add(payer, requester, amount);
            held[payer] = amount;
        }
        if (had || held.Count > 0)
        {
            _store?.Replace(requester, held);
        }
    }

    /// <summary>Drops everything <paramref name="requester"/> was backed by.</summary>
    public void Release(PeerId requester)
    {
        if (ReleaseCore(requester))
        {
            _store?.Replace(requester, new Dictionary<PeerId, long>());
        }
    }

    private bool ReleaseCore(PeerId requester)
    {
        if (!_payersOf.TryGetValue(requester, out var payers))
        {
            return false;
        }
        foreach (var payer in payers.ToList())
        {
            Remove(payer, requester);
        }
        return true;
    }

    private void Add(PeerId payer, PeerId requester, long amount)
    {
        if (!_byPayer.TryGetValue(payer, out var backs))
        {
            _byPayer[payer] = backs = [];
        }
        backs[requester] = amount;
        Count++;
        if (!_payersOf.TryGetValue(requester, out var payers))
        {
            _payersOf[requester] = payers = [];
        }
        payers.Add(payer);
    }

    /// <summary>What <paramref name="payer"/> backs for <paramref name="requester"/> now (0 for none).</summary>
    public long Backs(PeerId payer, PeerId requester) =>
        _byPayer.TryGetValue(payer, out var backs) ? backs.GetValueOrDefault(requester) : 0;

    private void Remove(PeerId payer, PeerId requester)
    {
        if (_byPayer.TryGetValue(payer, out var backs) && backs.Remove(requester))
        {
            Count--;
            if (backs.Count == 0)
            {
                _byPayer.Remove(payer);
            }
        }
        if (_payersOf.TryGetValue(requester, out var payers))
        {
            payers.Remove(payer);
            if (payers.Count == 0)
            {
                _payersOf.Remove(requester);
            }
        }
    }
}

/// <summary>Where a <see cref="VouchBook"/> keeps what each payer's surplus backs, so that a restart does not divide it afresh.</summary>
public interface IVouchStore
{
    /// <summary>Up to <paramref name="max"/> entries held: (payer, requester, micro-credits backed).</summary>
    IEnumerable<(PeerId Payer, PeerId Requester, long Amount)> Load(int max);

    /// <summary>Replaces every entry of <paramref name="requester"/> with <paramref name="backs"/> (by payer; empty drops them all).</summary>
    void Replace(PeerId requester, IReadOnlyDictionary<PeerId, long> backs);

    /// <summary>Drops one entry.</summary>
    void Remove(PeerId payer, PeerId requester);
}

/// <summary>A <see cref="VouchBook"/>'s entries in the node's ledger (<see cref="Credits.CreditLedger.Vouches"/>).</summary>
public sealed class LedgerVouchStore(Credits.CreditLedger ledger) : IVouchStore
{
    public IEnumerable<(PeerId Payer, PeerId Requester, long Amount)> Load(int max) => ledger.Vouches(max);

    public void Replace(PeerId requester, IReadOnlyDictionary<PeerId, long> backs) => ledger.ReplaceVouches(requester, backs);

    public void Remove(PeerId payer, PeerId requester) => ledger.RemoveVouch(payer, requester);
}
