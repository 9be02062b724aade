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
/// <param name="Served">What honest nodes granted: leases completed unpaid, forged receipts recorded, squats offered, proofs re-run, spam messages that made a node list a provider.</param>
/// <param name="Refused">Attempts the honest side turned down (rejected, refused, or closed).</param>
/// <param name="FuelObtained">Fuel of the work freeloaders got without paying.</param>
/// <param name="Unpaid">Credits honest providers recorded as owed by the adversaries, at the end (what they are known to be owed).</param>
/// <param name="AllowanceFuel">The credit honest providers extended the adversaries, in fuel: (credit limit per requester ÷ price + the largest lease
/// obtained, since the limit is checked before a lease) per provider and adversary.</param>
/// <param name="ProofReRuns">Times an honest node re-ran a task to check a published fraud proof.</param>
/// <param name="SquatHeldMaxS">The longest an honest provider's core stayed held by a squatted lease (virtual seconds).</param>
/// <param name="SpamRejected">Gossip messages honest routers rejected (failed validation) during the run.</param>
public sealed record AttackFigures(string Kind, int Attempts, int Served, int Refused, long FuelObtained, long Unpaid, double AllowanceFuel,
    int ProofReRuns, double SquatHeldMaxS, long SpamRejected)
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

    /// <summary>Schedules every adversary's attacks from <paramref name="start"/> over the scenario's duration.</summary>
    public IEnumerable<Task> Schedule(TimeSpan start)
    {
        var kind = _mesh.Options.Adversary;
        if (!IsRequesterSide(kind))
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

    /// <summary>The figures, once the run has drained.</summary>
    public AttackFigures Measure()
    {
        var kind = _mesh.Options.Adversary;
        if (!IsRequesterSide(kind) || !_mesh.Nodes.Any(n => n.IsAdversary))
        {
            return AttackFigures.None with { Kind = IsRequesterSide(kind) ? Name(kind) : "none" };
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
        return new AttackFigures(Name(kind), _attempts, served, _refused, _fuel, unpaid, allowance, _reRuns, _heldMax, rejected - _rejectedAtStart);
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
        _ => "none",
    };

    /// <summary>The kind called <paramref name="name"/> (as <see cref="Name"/> writes it), or null.</summary>
    public static AdversaryKind? Parse(string name) =>
        Enum.GetValues<AdversaryKind>().Where(k => k != AdversaryKind.None).Select(k => (AdversaryKind?)k).FirstOrDefault(k => Name(k!.Value) == name);
}
