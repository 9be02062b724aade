using Potluck.Scheduler.Sandbox;

namespace Potluck.Scheduler.Tests.Sandbox;

/// <summary>The fence's bookkeeping on store readings alone (what Wasmtime does with them: <see cref="DebitNoteSandboxTests"/>).</summary>
public class FuelFenceTests
{
    private const ulong Limit = 1000;
    private const ulong Reserve = FuelFence.ReserveOnly;

    [Test]
    public void Arms_TheGapToTheNextFence_AndSeesACrossingFromTheSaveAtIt()
    {
        var fence = new FuelFence(Limit, first: 100, spacing: 100);
        Assert.That((fence.InitialStoreFuel, fence.Hidden), Is.EqualTo((100UL, 900UL)));

        // Tick 1: the guest saved at 30 used (a call); arm a reserve of one gap.
        Assert.That(fence.OnEpoch(70), Is.EqualTo(Reserve + 100));
        Assert.That((fence.LastUsed, fence.Armed, fence.Hidden), Is.EqualTo((30UL, true, 800UL)));
        // Tick 2: no save since: nothing new, nothing set.
        Assert.That(fence.OnEpoch(Reserve + 100), Is.Null);
        // Tick 3: the guest crossed 100 (3 over) and Wasmtime moved the reserve in: 97 left to 200. Arm the next gap.
        Assert.That(fence.OnEpoch(97), Is.EqualTo(Reserve + 100));
        Assert.That((fence.LastUsed, fence.Zero, fence.Horizon, fence.Crossings, fence.Crossed), Is.EqualTo((103UL, 200UL, 300UL, 1, true)));
        // It ends with a save at 250 used: 50 left to the horizon at 300.
        Assert.That(fence.Consumed(50), Is.EqualTo(250UL));
        Assert.That(fence.Crossings, Is.EqualTo(2), "250 is past the fence at 200: crossed at the end");
    }

    [Test]
    public void TheLastFence_IsTheLimit_AndNothingIsHeldBackThen()
    {
        var fence = new FuelFence(Limit, first: 900, spacing: 400);
        Assert.That(fence.OnEpoch(900), Is.EqualTo(Reserve + 100));
        Assert.That((fence.Horizon, fence.Hidden, fence.IsFalseOutOfFuel), Is.EqualTo((Limit, 0UL, false)));
        Assert.That(fence.OnEpoch(50), Is.Null, "past the last fence: nothing left to arm");
        Assert.That(fence.Zero, Is.EqualTo(Limit));
    }

    [Test]
    public void AFenceReachedUnarmed_IsAFalseOutOfFuel()
    {
        var fence = new FuelFence(Limit, first: 100, spacing: 100);
        Assert.That(fence.Consumed(0), Is.EqualTo(100UL));
        Assert.That(fence.IsFalseOutOfFuel, Is.True, "900 still held back");
    }

    [Test]
    public void AHostCharge_CountsTheHeldBackFuel_AndSetsTheStoreToTheNextFence()
    {
        var fence = new FuelFence(Limit, first: 100, spacing: 100);
        fence.OnEpoch(60); // 40 used, armed to 200
        var store = 20UL; // crossed at 100 and saved at 180 used (a host call): 20 left to the horizon at 200
        Assert.That(fence.TryCharge(ref store, 150), Is.True, "830 left in all, though the store held 20");
        Assert.That((store, fence.LastUsed, fence.Zero, fence.Armed, fence.Crossed), Is.EqualTo((70UL, 330UL, 400UL, false, false)));

        store = 70;
        Assert.That(fence.TryCharge(ref store, 671), Is.False, "670 left");
        Assert.That((store, fence.Hidden), Is.EqualTo((0UL, 0UL)));
    }
}
