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
    public void AHostCharge_ComesFromTheFuelHeldBack_LeavingAnArmedReserveInPlace()
    {
        var fence = new FuelFence(Limit, first: 100, spacing: 100);
        Assert.That(fence.OnEpoch(60), Is.EqualTo(Reserve + 100)); // 40 used; armed to 200
        // The guest saved at 70 used (30 to its zero at 100, reserve 100) and a host call charges 150: from the 800 held back.
        Assert.That(fence.TryCharge(130, 150, out var set), Is.True);
        Assert.That((set, fence.LastUsed, fence.Hidden, fence.Armed), Is.EqualTo(((ulong?)null, 220UL, 650UL, true)), "the store untouched");
        // The guest crosses its zero (store terms 100, 250 used) and Wasmtime moves the reserve in: the next fence is at a slice
        // boundary again (400 used: 250 in store terms), not 150 past it.
        Assert.That(fence.OnEpoch(95), Is.EqualTo(Reserve + 50));
        Assert.That((fence.LastUsed, fence.Zero, fence.Horizon, fence.Crossings), Is.EqualTo((255UL, 200UL, 250UL, 1)));
        Assert.That(fence.Consumed(0), Is.EqualTo(400UL), "ran to the horizon: 400 used");
    }

    [Test]
    public void AHostCharge_BeyondTheFuelHeldBack_SetsTheStoreToAllThatIsLeft_OrStopsTheRun()
    {
        var fence = new FuelFence(Limit, first: 900, spacing: 100);
        Assert.That(fence.TryCharge(850, 150, out var set), Is.True, "50 used; 100 held back; 950 left");
        Assert.That((set, fence.Hidden, fence.LastUsed), Is.EqualTo(((ulong?)800, 0UL, 200UL)));
        Assert.That(fence.TryCharge(800, 801, out set), Is.False, "800 left");
        Assert.That((set, fence.IsFalseOutOfFuel), Is.EqualTo(((ulong?)0, false)));
    }

    [Test]
    public void AStoreReadingZero_WithFuelHeldBack_IsNotAFigure()
    {
        // The guest passed its zero at 100 (unarmed) by an amount no check saw, and returned: Wasmtime reads 0.
        var fence = new FuelFence(Limit, first: 100, spacing: 100);
        fence.Consumed(0);
        Assert.That(fence.Lost, Is.True);
        var other = new FuelFence(Limit, first: 100, spacing: 100);
        Assert.That(other.TryCharge(0, 10, out var set), Is.False, "a host call then stops the run");
        Assert.That((other.Lost, set), Is.EqualTo((true, (ulong?)null)));
        Assert.That(new FuelFence(Limit, first: 100, spacing: 100).Consumed(1), Is.EqualTo(99UL), "a reading above 0 is exact");
    }

    [Test]
    public void TheFirstSpacing_IsTheSlice_UnlessATickRunsMore()
    {
        Assert.That(FuelFence.FirstSpacing(1UL << 30, TimeSpan.FromMilliseconds(10)), Is.EqualTo(1UL << 30));
        Assert.That(FuelFence.FirstSpacing(1UL << 20, TimeSpan.FromMilliseconds(10)), Is.EqualTo(1UL << 27), "2^33 fuel/s × 10 ms ≈ 2^26.4");
    }
}
