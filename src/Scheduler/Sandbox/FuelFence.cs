namespace Potluck.Scheduler.Sandbox;

/// <summary>
/// Makes a run's fuel visible at fixed points (fences: slice boundaries of debit notes) even while the guest spins in a
/// loop that makes no call. A pure core: store readings in, store settings out; <see cref="WasmSandbox"/> and
/// <see cref="WasiPreview1"/> apply them.
/// <para>
/// Why it is needed (Wasmtime 50, read in crates/cranelift/src/func_environ.rs and crates/wasmtime/src/runtime): compiled
/// code keeps the fuel count in a function-local variable (<c>fuel_var</c>), loads it from the store at function entry,
/// after calls and after the out-of-gas libcall (<c>fuel_load_into_var</c>), and writes it back only before calls, returns,
/// <c>unreachable</c> and the out-of-gas libcall (<c>fuel_save_from_var</c>, from <c>fuel_before_op</c> and
/// <c>fuel_check</c>). The epoch check (<c>epoch_check_full</c>) calls the <c>new_epoch</c> libcall, and so the
/// deadline callback, without saving it: in a call-free loop the store's fuel, as the callback reads it, stays where it
/// was when the loop began. The only point where such a loop writes its count back is when the count reaches zero
/// (<c>fuel_check</c>: save, <c>out_of_gas</c>, load). The libcall (<c>runtime/vm/libcalls.rs</c> <c>out_of_gas</c>)
/// refuels from the store's reserve and the run goes on; with no reserve it traps. Outside async stores (which the .NET
/// binding lacks) the reserve is only non-zero when the store is given more than <see cref="long.MaxValue"/> fuel
/// (<c>store.rs</c> <c>set_fuel</c>: what exceeds it is kept back), and the count the compiled code holds is not
/// reloaded by a store write.
/// </para>
/// <para>
/// So: the store starts with fuel only up to the first fence (its <see cref="Zero"/>, where the guest's own count reaches
/// zero); at the next epoch callback the store is set to <see cref="ReserveOnly"/> + the gap to the following fence, which
/// leaves the guest's count alone (the store's active part written then is garbage, overwritten by the guest's next save,
/// and never loaded first: every load follows a save) and puts the gap in the reserve. When the guest reaches the fence,
/// Wasmtime saves its count (the fuel used becomes exact), moves the reserve into play and runs on to the next fence. The
/// rest of the limit is held here (<see cref="Hidden"/>), and host calls charge against it while it lasts, so they leave an
/// armed reserve in place (a store write cannot set a count and a reserve at once). The compiled code and its checks are unchanged, so a run ends
/// exactly where a plain run would, with the same fuel, as long as every fence was armed before the guest reached it. A
/// fence reached unarmed (no epoch tick between two fences) traps as out of fuel with fuel still held here
/// (<see cref="IsFalseOutOfFuel"/>): the sandbox then runs the task again with fences twice as far apart.
/// </para>
/// </summary>
internal sealed class FuelFence
{
    /// <summary>Store fuel at or above this is a reserve-only setting (no save since): the active part is garbage.</summary>
    public const ulong ReserveOnly = long.MaxValue;

    /// <summary>The largest limit fenced (readings stay far below <see cref="ReserveOnly"/>).</summary>
    public const ulong MaxLimit = 1UL << 62;

    /// <summary>Fuel a fast core runs in a second of a tight loop, about (for the first gap between fences: see <see cref="FirstSpacing"/>).</summary>
    public const ulong FuelPerSecond = 1UL << 33;

    /// <summary>
    /// The gap between fences to start with: the slice, doubled while it is less than the fuel of one epoch tick at
    /// <see cref="FuelPerSecond"/> (a fence must be armed by a tick before the guest reaches it, or the run is done again).
    /// </summary>
    public static ulong FirstSpacing(ulong slice, TimeSpan tick)
    {
        var tickFuel = tick.TotalSeconds * FuelPerSecond;
        var spacing = Math.Max(1, slice);
        while (spacing < tickFuel && spacing <= MaxLimit / 2)
        {
            spacing *= 2;
        }
        return spacing;
    }

    private readonly ulong _limit;
    private readonly ulong _first;
    private readonly ulong _spacing;
    private ulong _charged;

    /// <param name="limit">The run's fuel limit.</param>
    /// <param name="first">The first fence (below <paramref name="limit"/>).</param>
    /// <param name="spacing">The gap between fences.</param>
    public FuelFence(ulong limit, ulong first, ulong spacing)
    {
        if (limit > MaxLimit || first == 0 || first >= limit || spacing == 0) throw new ArgumentOutOfRangeException(nameof(first));
        _limit = limit;
        _first = first;
        _spacing = spacing;
        Zero = Horizon = first;
    }

    /// <summary>The fuel to give the store before the guest first runs.</summary>
    public ulong InitialStoreFuel => _first;

    /// <summary>
    /// Where the guest's own count reaches zero: the fence it crosses next. Like <see cref="Horizon"/>, in the store's terms:
    /// fuel used less what host calls charged against the fuel held back (<see cref="TryCharge"/>).
    /// </summary>
    public ulong Zero { get; private set; }

    /// <summary>Where the store's fuel (count and reserve) runs out.</summary>
    public ulong Horizon { get; private set; }

    /// <summary>Whether a reserve beyond <see cref="Zero"/> is in the store.</summary>
    public bool Armed { get; private set; }

    /// <summary>Fuel held back from the store.</summary>
    public ulong Hidden => _limit - _charged - Horizon;

    /// <summary>Fuel used at the last save seen (exact there; a lower bound after).</summary>
    public ulong LastUsed { get; private set; }

    /// <summary>
    /// A fence was crossed since the last host call: the last save may then be the crossing's, which a plain run does not
    /// make (it matters only for a trap that does not save first).
    /// </summary>
    public bool Crossed { get; private set; }

    /// <summary>
    /// The store read 0 with fuel held back: the guest's count may have passed its zero by some amount no check has seen
    /// (Wasmtime reads a count past zero with no reserve as 0), so the fuel used is not known. The sandbox does not report it:
    /// a host call stops the run (it runs again, with wider fences), an end runs again without fences.
    /// </summary>
    public bool Lost { get; private set; }

    /// <summary>Fences crossed so far.</summary>
    public int Crossings { get; private set; }

    /// <summary>At an epoch callback: reads the store's fuel; returns the fuel to set, if any (a reserve to arm).</summary>
    public ulong? OnEpoch(ulong storeFuel)
    {
        if (storeFuel >= ReserveOnly)
        {
            return null; // armed, and no save since: nothing new
        }
        var used = StoreUsed(storeFuel);
        LastUsed = _charged + used;
        if (Armed && used >= Zero)
        {
            // Every epoch check follows a fuel check at the same point: a save at or past the fence means the fence was crossed.
            Zero = Horizon;
            Armed = false;
            Crossed = true;
            Crossings++;
        }
        if (Armed || Zero >= _limit - _charged)
        {
            return null;
        }
        Horizon = NextAbove(Zero);
        Armed = true;
        return ReserveOnly + (Horizon - Zero);
    }

    /// <summary>
    /// A host call charges <paramref name="cost"/> (the guest saved its count before the call): false when the fuel left is
    /// less. Charged against the fuel held back while it suffices, leaving the store (and an armed reserve) as it is; else
    /// from the store, whose fuel <paramref name="set"/> then holds: all that is left (no fences after); null: leave the store.
    /// </summary>
    public bool TryCharge(ulong storeFuel, ulong cost, out ulong? set)
    {
        set = null;
        if (storeFuel == 0 && Hidden > 0)
        {
            Lost = true;
            return false;
        }
        var used = storeFuel >= ReserveOnly ? LastUsed - _charged : StoreUsed(storeFuel);
        var inStore = Horizon - used;
        Crossed = false; // the guest's save before the call and the charge: what a plain run's store holds after it
        if (cost <= Hidden)
        {
            _charged += cost;
            LastUsed = _charged + used;
            return true;
        }
        var left = inStore + Hidden;
        if (cost > left)
        {
            set = 0;
            Zero = Horizon = _limit - _charged;
            Armed = false;
            LastUsed = _limit;
            return false;
        }
        set = left - cost;
        Zero = Horizon = _limit - _charged;
        Armed = false;
        LastUsed = _charged + used + cost;
        return true;
    }

    /// <summary>The fuel used when the run ended, as a plain run reports it (see <see cref="Crossed"/>).</summary>
    public ulong Consumed(ulong storeFuel)
    {
        if (storeFuel >= ReserveOnly)
        {
            return LastUsed;
        }
        if (storeFuel == 0 && Hidden > 0)
        {
            Lost = true;
        }
        var used = StoreUsed(storeFuel);
        if (Armed && used >= Zero)
        {
            Crossed = true;
            Crossings++;
        }
        return _charged + used;
    }

    /// <summary>
    /// Whether an out-of-fuel end came with fuel still held here: a fence reached unarmed (or <see cref="Lost"/> in a host
    /// call), not the limit.
    /// </summary>
    public bool IsFalseOutOfFuel => Hidden > 0;

    private ulong StoreUsed(ulong storeFuel) => Horizon - Math.Min(storeFuel, Horizon);

    /// <summary>The next fence past <paramref name="used"/> (store terms): slice boundaries less what the fuel held back paid.</summary>
    private ulong NextAbove(ulong used)
    {
        var end = _limit - _charged;
        var at = (UInt128)used + _charged; // in fuel used
        UInt128 next = at < _first ? _first : _first + ((at - _first) / _spacing + 1) * _spacing;
        return next - _charged >= end ? end : (ulong)(next - _charged);
    }
}
