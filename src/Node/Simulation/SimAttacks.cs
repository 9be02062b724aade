using System.Globalization;
using Microsoft.Extensions.Logging.Abstractions;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Adversaries;
using Potluck.Scheduler.Advertising;
using Potluck.Scheduler.Execution;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Providing;

namespace Potluck.Node.Simulation;

/// <summary>What the requester-side adversaries of a run tried, and what the honest nodes gave them.</summary>
/// <param name="Kind">The adversary kind (or "none").</param>
/// <param name="Attempts">Attacks made (leases asked, receipts sent, squats tried, proofs or spam bursts published).</param>
/// <param name="Refused">Attempts the honest side turned down (rejected, refused, or closed).</param>
/// <param name="FuelObtained">Fuel of the work freeloaders got without paying; for forkers, the work they got after forking, plus
/// what they paid before it in fuel at their price (their balance, which the gain counts, is down by just that).</param>
/// <param name="Served">What honest nodes granted: leases completed unpaid, forged receipts recorded, squats offered, proofs re-run, spam
/// messages that made a node list a provider, leases a forker got after it forked.</param>
/// <param name="Unpaid">Credits honest providers recorded as owed by the adversaries, at the end (what they are known to be owed).</param>
/// <param name="AllowanceFuel">The credit honest providers extended the adversaries, in fuel: (credit limit per requester ÷ price + the largest lease
/// obtained, since the limit is checked before a lease) per provider and adversary.</param>
/// <param name="ProofReRuns">Times an honest node re-ran a task to check a published fraud proof.</param>
/// <param name="SquatHeldMaxS">The longest an honest provider's core stayed held by a squatted lease (virtual seconds).</param>
/// <param name="SpamRejected">Gossip messages honest routers rejected (failed validation) during the run.</param>
/// <param name="Forks">Forks the forkers signed (a second half-block at a seq they had used).</param>
/// <param name="ForkProofHolders">Honest nodes up at the end that hold a fork proof against every forker (of those up).</param>
/// <param name="HonestUp">Honest nodes up at the end.</param>
/// <param name="ServedAsProviderAfterProof">Honest tasks leased to a forker that were submitted after their requester had refused it.</param>
public sealed record AttackFigures(string Kind, int Attempts, int Served, int Refused, long FuelObtained, long Unpaid, double AllowanceFuel,
    int ProofReRuns, double SquatHeldMaxS, long SpamRejected, int Forks = 0, int ForkProofHolders = 0, int HonestUp = 0,
    int ServedAsProviderAfterProof = 0)
{
    public static AttackFigures None { get; } = new("none", 0, 0, 0, 0, 0, 0, 0, 0, 0);
}

/// <summary>
/// The requester-side adversaries of issue 8 mixed into a run (src/Scheduler/Adversaries, the product code the attack
/// tests use): each adversary node makes <see cref="SimScenario.AttackAttempts"/> attacks spread over the workload,
/// against the honest providers in turn (or, for proofs and spam, against everyone through gossip).
/// </summary>
internal sealed class SimAttacks
{
    private readonly SimulatedMesh _mesh;
    private readonly SimScenario _scenario;
    private int _attempts;
    private int _served;
    private int _refused;
    private long _fuel;
    private int _reRuns;
    private double _heldMax;
    private long _leaseFuelMax;
    private int _forks;
    private readonly Dictionary<int, TimeSpan> _forkedAt = [];

    public SimAttacks(SimulatedMesh mesh, SimScenario scenario)
    {
        _mesh = mesh;
        _scenario = scenario;
        foreach (var n in mesh.Nodes.Where(n => !n.IsAdversary && n.Node?.Compute is not null))
        {
            n.Node!.Compute!.Fraud.Checked += (_, _) => _reRuns++;
        }
        foreach (var n in mesh.Nodes)
        {
            _rejectedAtStart += n.Node?.Gossip.Counters.Rejected ?? 0;
        }
    }

    private readonly long _rejectedAtStart;

    /// <summary>Whether <paramref name="kind"/> attacks as a requester (drawn among the requesting nodes) rather than as a provider.</summary>
    public static bool IsRequesterSide(AdversaryKind kind) =>
        kind is AdversaryKind.Freeloader or AdversaryKind.ReceiptForger or AdversaryKind.Squatter or AdversaryKind.ProofSpammer or AdversaryKind.GossipSpammer;

    /// <summary>Whether adversaries of <paramref name="kind"/> make attacks on a schedule (requester-side kinds and forkers).</summary>
    public static bool Attacks(AdversaryKind kind) => IsRequesterSide(kind) || kind == AdversaryKind.Forker;

    /// <summary>Schedules every adversary's attacks from <paramref name="start"/> over the scenario's duration.</summary>
    public IEnumerable<Task> Schedule(TimeSpan start)
    {
        var kind = _mesh.Options.Adversary;
        if (!Attacks(kind))
        {
            yield break;
        }
        var attempts = _scenario.AttackAttempts;
        foreach (var attacker in _mesh.Nodes.Where(n => n.IsAdversary))
        {
            yield return RunAsync(attacker, kind, start, attempts);
        }
    }

    private async Task RunAsync(SimNode attacker, AdversaryKind kind, TimeSpan start, int attempts)
    {
        var honest = _mesh.Providers.Where(p => !p.IsAdversary).ToList();
        var random = new Random(unchecked((int)attacker.Seed ^ 0x5eed));
        FreeloadingRequester? freeloader = null;
        PotluckNode? incarnation = null;
        try
        {
            for (var i = 0; i < attempts; i++)
            {
                var at = start + TimeSpan.FromTicks(_scenario.Duration.Ticks * (2 * i + 1) / (2 * attempts));
                var wait = at - _mesh.Elapsed;
                if (wait > TimeSpan.Zero)
                {
                    await Task.Delay(wait, _mesh.Clock);
                }
                if (attacker.Node is not { } node || honest.Count == 0)
                {
                    continue;
                }
                if (!ReferenceEquals(node, incarnation))
                {
                    if (freeloader is not null)
                    {
                        await freeloader.DisposeAsync();
                    }
                    incarnation = node;
                    freeloader = new FreeloadingRequester(node.Host, attacker.Key, node.Runtime, NullLogger.Instance);
                }
                var target = honest[(attacker.Index + i) % honest.Count];
                _attempts++;
                try
                {
                    await AttackAsync(kind, attacker, node, freeloader!, target, random, i);
                }
                catch (Exception e) when (e is not OutOfMemoryException)
                {
                    // A stream reset, a refused dial, a closed connection: the honest side said no.
                    _refused++;
                    _mesh.Record(string.Create(CultureInfo.InvariantCulture, $"{attacker} attack {i} on {target} refused: {e.GetType().Name}"));
                }
            }
        }
        finally
        {
            if (freeloader is not null)
            {
                await freeloader.DisposeAsync();
            }
        }
    }

    private LeaseWork Work(Random random, int rounds) => new()
    {
        Module = SimulatedMesh.HashChainModuleBytes,
        Input = new TaskPayload([rounds.ToString(CultureInfo.InvariantCulture)], RandomBytes(random, 16)).Encode(),
        FuelLimit = 50_000_000,
        MemoryLimitBytes = 16L << 20,
        Deadline = _mesh.Clock.GetUtcNow() + TimeSpan.FromMinutes(5),
        MaxPricePerMegaFuel = Math.Max(1, _mesh.Options.PricePerMegaFuel * 10),
    };

    private static byte[] RandomBytes(Random random, int length)
    {
        var bytes = new byte[length];
        random.NextBytes(bytes);
        return bytes;
    }

    private async Task AttackAsync(AdversaryKind kind, SimNode attacker, PotluckNode node, FreeloadingRequester freeloader, SimNode target,
        Random random, int attempt)
    {
        using var deadline = new CancellationTokenSource(TimeSpan.FromMinutes(2), _mesh.Clock);
        var ct = deadline.Token;
        switch (kind)
        {
            case AdversaryKind.Freeloader:
            {
                // Takes the work, never pays (no receipt is ever sent).
                var outcome = await freeloader.LeaseAsync(target.Key.PublicKey, Work(random, _scenario.TaskRounds), ct);
                if (outcome.Kind == LeaseOutcomeKind.Completed && outcome.Result is { } result)
                {
                    _served++;
                    _fuel += result.FuelUsed;
                    _leaseFuelMax = Math.Max(_leaseFuelMax, result.FuelUsed);
                }
                else
                {
                    _refused++;
                }
                _mesh.Record($"{attacker} freeload {target} {outcome.Kind}");
                break;
            }
            case AdversaryKind.ReceiptForger:
            {
                // Receipts for leases that never were: a small one, and one for an amount that would overflow a balance.
                var leaseId = FreeloadingRequester.LeaseIdOf((ulong)random.NextInt64(1, long.MaxValue));
                var (fuel, price) = attempt % 2 == 0 ? (1_000_000UL, (ulong)_mesh.Options.PricePerMegaFuel) : ((ulong)long.MaxValue, 1_000_000UL);
                var receipt = freeloader.ForgeReceipt(target.PeerId, leaseId, fuel, price, _mesh.Clock.GetUtcNow());
                var ack = await freeloader.SendReceiptAsync(target.PeerId, receipt, ct);
                if (ack.Status == ReceiptAckStatus.Refused)
                {
                    _refused++;
                }
                else
                {
                    _served++;
                }
                _mesh.Record($"{attacker} forged receipt to {target} {ack.Status}");
                break;
            }
            case AdversaryKind.Squatter:
            {
                await using var squatter = new SquattingRequester(node.Host, attacker.Key, node.Runtime, target.PeerId, NullLogger.Instance);
                var from = _mesh.Elapsed;
                if (!await squatter.SquatAsync(target.Key.PublicKey, Work(random, _scenario.TaskRounds), TimeSpan.FromSeconds(2)))
                {
                    _refused++;
                    _mesh.Record($"{attacker} squat {target} rejected");
                    break;
                }
                _served++;
                try
                {
                    await LoopSafeWait.WaitAsync(squatter.Ended.Task, TimeSpan.FromMinutes(2), _mesh.Clock, CancellationToken.None);
                }
                catch (TimeoutException)
                {
                    // Held for the whole window: the figure below says so.
                }
                var held = (_mesh.Elapsed - from).TotalSeconds;
                _heldMax = Math.Max(_heldMax, held);
                _mesh.Record(string.Create(CultureInfo.InvariantCulture, $"{attacker} squat {target} held {held:F3} s"));
                break;
            }
            case AdversaryKind.ProofSpammer:
            {
                // A proof of a lease between two identities the spammer holds: checking it would be a re-run for nothing.
                var input = new TaskPayload(["20000"], RandomBytes(random, 16)).Encode();
                var proof = ProofForger.SelfDealt(attacker.Key, PrivateKey.FromRandom(random), SimulatedMesh.HashChainModuleBytes, input, 200_000_000,
                    (ulong)random.NextInt64(1, long.MaxValue), _mesh.Clock.GetUtcNow());
                await node.Compute!.Fraud.PublishAsync(proof, ct);
                _mesh.Record($"{attacker} published a forged fraud proof");
                break;
            }
            case AdversaryKind.Forker:
                await ForkAsync(attacker, node, random, ct);
                break;
            case AdversaryKind.GossipSpammer:
            {
                // A burst of junk on the advertisement topic every node listens to.
                for (var m = 0; m < 20; m++)
                {
                    await node.Gossip.PublishAsync(AdvertisementProtocol.Topic, RandomBytes(random, 256), ct);
                }
                _mesh.Record($"{attacker} spammed 20 messages");
                break;
            }
        }
    }

    /// <summary>
    /// A forker's attempt: it submits a task through its own client like any requester (and pays, so its chain grows by one
    /// linked proposal), and once its chain holds two linked payments it forks: it signs a second half-block at the seq
    /// before its head — the head's payment, with the hash before that seq — and sends it to the head's provider, which
    /// holds the real block at that seq (it came with the head as its previous block). Work it gets after forking is
    /// what the fork won.
    /// </summary>
    private async Task ForkAsync(SimNode attacker, PotluckNode node, Random random, CancellationToken ct)
    {
        var compute = node.Compute!;
        var forked = _forkedAt.ContainsKey(attacker.Index);
        var task = SimulatedMesh.HashChainTask(random, _scenario.TaskRounds);
        var result = await compute.SubmitAsync(task.Submission, ct);
        if (result.Succeeded)
        {
            // Work before the fork was paid at the price asked: it counts as what the balance lost for it, so it nets to 0.
            _fuel += forked ? result.Fuel : (long)(result.Cost * 1_000_000.0 / Math.Max(1, _mesh.PriceOf(attacker)));
            _served += forked ? 1 : 0;
            _mesh.Record($"{attacker} forker task done by {_mesh.NodeOf(result.Provider)}");
        }
        else
        {
            _refused++;
            _mesh.Record($"{attacker} forker task {result.Status}");
        }
        if (forked || !result.Succeeded)
        {
            return;
        }
        await compute.Client.WhenReceiptsDeliveredAsync(ct);
        await compute.Chain!.WhenIdleAsync(ct);
        var ledger = compute.Ledger;
        var (head, _) = ledger.ChainHead();
        if (head < 2 || ledger.ChainBlockAt(attacker.PeerId, head) is not { } headBytes
            || Scheduler.Accounting.SignedBlock.DecodeChecked(headBytes) is not { } last || ledger.AgreementLinking(last.Hash) is null)
        {
            return; // not two linked payments yet
        }
        var seq = head - 1;
        var before = seq > 1 && ledger.ChainBlockAt(attacker.PeerId, seq - 1) is { } b ? Scheduler.Accounting.SignedBlock.DecodeChecked(b) : null;
        var twin = Scheduler.Accounting.SignedBlock.Sign(new Scheduler.Accounting.ChainBlock
        {
            Author = last.Block.Author,
            Seq = seq,
            Previous = before?.Hash ?? Scheduler.Accounting.SignedBlock.Genesis,
            Counterparty = last.Block.Counterparty,
            Kind = Scheduler.Accounting.BlockKind.Proposal,
            ReceiptId = last.Block.ReceiptId,
            LeaseId = last.Block.LeaseId,
            Amount = last.Block.Amount,
            FuelUsed = last.Block.FuelUsed,
            Payments = last.Block.Payments,
            TimestampUnixMs = _mesh.Clock.GetUtcNow().ToUnixTimeMilliseconds(),
        }, attacker.Key);
        _forkedAt[attacker.Index] = _mesh.Elapsed;
        _forks++;
        var answer = await new ChainForker(node.Host, attacker.Key).SendAsync(last.Counterparty, twin, before, ct);
        _mesh.Record($"{attacker} forked at seq {seq} to {_mesh.NodeOf(last.Counterparty)}: {answer.Status} {answer.Detail}");
    }

    /// <summary>The figures, once the run has drained.</summary>
    public AttackFigures Measure()
    {
        var kind = _mesh.Options.Adversary;
        if (!Attacks(kind) || !_mesh.Nodes.Any(n => n.IsAdversary))
        {
            return AttackFigures.None with { Kind = Attacks(kind) ? Name(kind) : "none" };
        }
        var adversaries = _mesh.Nodes.Where(n => n.IsAdversary).ToList();
        var honestProviders = _mesh.Providers.Where(p => !p.IsAdversary).ToList();
        long unpaid = 0;
        foreach (var p in honestProviders)
        {
            if (p.Node?.Compute is { } c)
            {
                unpaid += adversaries.Sum(a => c.Ledger.Unpaid(a.PeerId));
            }
        }
        var limit = new ProviderOptions().CreditLimitPerRequester;
        if (_mesh.Options.CreditLimitPerRequester is { } set)
        {
            limit = set;
        }
        // A provider checks what a requester owes before each lease, so it extends its credit limit plus one lease.
        var allowance = honestProviders.Count * adversaries.Count * ((limit * 1_000_000.0 / Math.Max(1, _mesh.Options.PricePerMegaFuel)) + _leaseFuelMax);
        long rejected = 0;
        foreach (var n in _mesh.Nodes.Where(n => !n.IsAdversary))
        {
            rejected += n.Node?.Gossip.Counters.Rejected ?? 0;
        }
        var served = _served;
        if (kind == AdversaryKind.ProofSpammer)
        {
            served = _reRuns;
        }
        else if (kind == AdversaryKind.GossipSpammer)
        {
            // Spam counts as served where it made an honest node list a provider that does not exist.
            var real = _mesh.Providers.Select(p => p.PeerId).ToHashSet();
            served = _mesh.Nodes.Where(n => !n.IsAdversary && n.Node?.Compute is not null)
                .Sum(n => n.Node!.Compute!.Client.Providers().Count(a => !real.Contains(a.Provider)));
        }
        int holders = 0, honestUp = 0, providedAfter = 0;
        if (kind == AdversaryKind.Forker)
        {
            foreach (var n in _mesh.Nodes.Where(n => !n.IsAdversary && n.Node?.Compute?.Chain is not null))
            {
                honestUp++;
                holders += adversaries.All(a => n.Node!.Compute!.Chain!.IsForker(a.PeerId)) ? 1 : 0;
            }
            // Refused as a provider: no honest requester leased it work after that requester refused it.
            var refusedAt = _mesh.Events.Where(e => e.Kind == MeshEventKind.Refused && e.Other >= 0)
                .GroupBy(e => (e.Node, e.Other)).ToDictionary(g => g.Key, g => g.Min(e => e.At));
            providedAfter = _mesh.Tasks.Count(t => t.ProviderIndex >= 0 && _mesh.Nodes[t.ProviderIndex].IsAdversary
                && refusedAt.TryGetValue((t.RequesterIndex, t.ProviderIndex), out var at) && t.Submitted > at);
        }
        return new AttackFigures(Name(kind), _attempts, served, _refused, _fuel, unpaid, allowance, _reRuns, _heldMax, rejected - _rejectedAtStart,
            _forks, holders, honestUp, providedAfter);
    }

    public static string Name(AdversaryKind kind) => kind switch
    {
        AdversaryKind.Cheater => "cheater",
        AdversaryKind.SelectiveCheater => "selective",
        AdversaryKind.FuelInflater => "fuel-inflater",
        AdversaryKind.FalseTimeout => "false-timeout",
        AdversaryKind.Freeloader => "freeloader",
        AdversaryKind.ReceiptForger => "receipt-forger",
        AdversaryKind.Squatter => "squatter",
        AdversaryKind.ProofSpammer => "proof-spammer",
        AdversaryKind.GossipSpammer => "gossip-spammer",
        AdversaryKind.Sybil => "sybil",
        AdversaryKind.Whitewasher => "whitewasher",
        AdversaryKind.Forker => "forker",
        _ => "none",
    };

    /// <summary>The kind called <paramref name="name"/> (as <see cref="Name"/> writes it), or null.</summary>
    public static AdversaryKind? Parse(string name) =>
        Enum.GetValues<AdversaryKind>().Where(k => k != AdversaryKind.None).Select(k => (AdversaryKind?)k).FirstOrDefault(k => Name(k!.Value) == name);
}
