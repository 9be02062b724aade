using Potluck.Node.Simulation;

namespace Potluck.Node.Tests.Simulation;

/// <summary>
/// Each adversary kind of issue 8 mixed into a small mesh of complete nodes (`potluck sim --adversary KIND`): what the
/// honest side ends with. Every run's honest workload must complete, no honest provider may be accused, and credits
/// must be conserved; each kind then has its own outcome.
/// </summary>
[Category("fast")]
[Category("Adversarial")]
public class SimAdversaryTests
{
    private static SimReport Run(AdversaryKind kind, double share, long seed, long? creditLimit = null, int providers = 4) => SimRunner.Run(new SimScenario
    {
        Mesh = new MeshOptions
        {
            Nodes = 10, Providers = providers, CheaterShare = share, Adversary = kind, Seed = seed, CreditLimitPerRequester = creditLimit,
        },
        Tasks = 12,
        Duration = TimeSpan.FromSeconds(30),
        GossipProbes = 5,
        AttackAttempts = 8,
    });

    private static void HonestSideIntact(SimReport r, string why)
    {
        Assert.That(r.Tasks.Completed, Is.EqualTo(r.Tasks.Submitted), "every honest task completed; " + why);
        Assert.That(r.WrongAccepted, Is.Zero, "no wrong result accepted; " + why);
        Assert.That(r.HonestAccused, Is.Zero, "no honest provider accused; " + why);
        Assert.That(r.Credits.BalancesSum, Is.EqualTo(r.Credits.Grants), "credits conserved; " + why);
    }

    [Test]
    public void Freeloaders_GetWorkOnlyUpToTheCreditHonestProvidersExtend_ThenAreRefused()
    {
        // Two providers, so each adversary asks each of them four times: a lease costs about 20 credits here.
        var r = Run(AdversaryKind.Freeloader, 0.34, seed: 31, creditLimit: 30, providers: 2);
        var why = r.ToText();
        HonestSideIntact(r, why);
        Assert.That(r.Attacks.Kind, Is.EqualTo("freeloader"));
        Assert.That(r.Attacks.Attempts, Is.EqualTo(3 * 8), why);
        Assert.That(r.Attacks.Served, Is.GreaterThan(0), "a stranger gets some work on credit; " + why);
        Assert.That(r.Attacks.Refused, Is.GreaterThan(0), "then no more until it pays; " + why);
        Assert.That(r.AdversaryGain, Is.EqualTo(r.Attacks.FuelObtained), why);
        Assert.That(r.AdversaryGain, Is.LessThanOrEqualTo(r.Attacks.AllowanceFuel), "adversary gain at most the allowances extended; " + why);
        Assert.That(r.Attacks.Unpaid, Is.GreaterThan(0), "the providers know what they are owed; " + why);
    }

    [Test]
    public void ReceiptForgers_AreRefusedEveryTime_AndNothingIsCredited()
    {
        var r = Run(AdversaryKind.ReceiptForger, 0.34, seed: 32);
        var why = r.ToText();
        HonestSideIntact(r, why);
        Assert.That(r.Attacks.Attempts, Is.GreaterThan(0), why);
        Assert.That(r.Attacks.Served, Is.Zero, "no forged receipt recorded; " + why);
        Assert.That(r.Attacks.Refused, Is.EqualTo(r.Attacks.Attempts), why);
        Assert.That(r.AdversaryGain, Is.LessThanOrEqualTo(0), why);
    }

    [Test]
    public void Squatters_HoldACoreForSecondsNotUntilTheDeadline_AndHonestWorkCompletes()
    {
        var r = Run(AdversaryKind.Squatter, 0.34, seed: 33);
        var why = r.ToText();
        HonestSideIntact(r, why);
        Assert.That(r.Attacks.Served, Is.GreaterThan(0), "the squats were offered leases; " + why);
        Assert.That(r.Attacks.SquatHeldMaxS, Is.GreaterThan(0).And.LessThan(60), "each ended within a minute, not at its 5-minute deadline; " + why);
        Assert.That(r.Tasks.Failed, Is.Zero, why);
    }

    [Test]
    public void FraudProofSpammers_CostNoReRun_AndAccuseNobody()
    {
        var r = Run(AdversaryKind.ProofSpammer, 0.34, seed: 34);
        var why = r.ToText();
        HonestSideIntact(r, why);
        Assert.That(r.Attacks.Attempts, Is.EqualTo(2 * 8), why);
        Assert.That(r.Attacks.ProofReRuns, Is.Zero, "no node re-ran a task for providers nobody uses; " + why);
    }

    [Test]
    public void GossipSpammers_AreRejected_AndProbesAndTasksStillGetThrough()
    {
        var r = Run(AdversaryKind.GossipSpammer, 0.34, seed: 35);
        var why = r.ToText();
        HonestSideIntact(r, why);
        Assert.That(r.Attacks.SpamRejected, Is.GreaterThan(0), "the junk failed validation; " + why);
        Assert.That(r.Attacks.Served, Is.Zero, "no node lists a provider that does not exist; " + why);
        Assert.That(r.Gossip.Delivery, Is.EqualTo(1.0), "every probe still reached every node; " + why);
    }

    [Test]
    public void SybilSwarmOfColludingCheapReplicas_IsCaughtEntirely_AndGainsNothing()
    {
        var r = Run(AdversaryKind.Sybil, 0.5, seed: 36, providers: 6);
        var why = r.ToText();
        HonestSideIntact(r, why);
        Assert.That(r.Cheaters.Count, Is.EqualTo(3), why);
        Assert.That(r.Cheaters.Caught, Is.EqualTo(3), "every member of the swarm is caught; " + why);
        Assert.That(r.AdversaryGain, Is.LessThanOrEqualTo(0), why);
    }

    [Test]
    public void Whitewashers_ComeBackAsStrangers_AndGainNothing()
    {
        var r = Run(AdversaryKind.Whitewasher, 0.5, seed: 37);
        var why = r.ToText();
        HonestSideIntact(r, why);
        Assert.That(r.Whitewashes, Is.GreaterThan(0), "caught, they took new identities; " + why);
        Assert.That(r.Cheaters.Caught, Is.GreaterThan(0), why);
        Assert.That(r.Cheaters.Corrupted, Is.GreaterThan(0), why);
        Assert.That(r.AdversaryGain, Is.LessThanOrEqualTo(0), "a new identity is a stranger, verified again, and earns nothing; " + why);
        Assert.That(r.Gossip.Delivery, Is.EqualTo(1.0), why);
    }

    [Test]
    public void Forkers_AreCaughtByAForkProof_RefusedAsRequesterAndAsProvider_AndGainNothing()
    {
        var r = Run(AdversaryKind.Forker, 0.25, seed: 38);
        var why = r.ToText();
        HonestSideIntact(r, why);
        Assert.That((r.Cheaters.Count, r.Attacks.Kind), Is.EqualTo((1, "forker")), why);
        Assert.That(r.Attacks.Forks, Is.EqualTo(1), "the forker paid twice, then signed a second block at a seq it had used; " + why);
        Assert.That(r.Attacks.HonestUp, Is.EqualTo(9), why);
        Assert.That(r.Attacks.ForkProofHolders, Is.EqualTo(r.Attacks.HonestUp), "every honest node holds the fork proof; " + why);
        Assert.That(r.Cheaters.Caught, Is.EqualTo(1), why);
        Assert.That(r.Attacks.Served, Is.Zero, "no lease for it after the fork: refused as requester; " + why);
        Assert.That(r.Attacks.Refused, Is.EqualTo(r.Attacks.Attempts - 2), "every submission after the fork was refused; " + why);
        Assert.That(r.Attacks.ServedAsProviderAfterProof, Is.Zero, "no honest requester leased it work once it held the proof; " + why);
        Assert.That(r.AdversaryGain, Is.LessThanOrEqualTo(0), "it paid for what it got and got nothing after forking; " + why);
    }
}
