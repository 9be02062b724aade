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
/// rest of the limit is held here (<see cref="Hidden"/>). The compiled code and its checks are unchanged, so a run ends
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

    private readonly ulong _limit;
    private readonly ulong _first;
    private readonly ulong _spacing;

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

    /// <summary>Where the guest's own count reaches zero: the fence it crosses next.</summary>
    public ulong Zero { get; private set; }

    /// <summary>The fuel used at which the store's fuel (count and reserve) runs out.</summary>
    public ulong Horizon { get; private set; }

    /// <summary>Whether a reserve beyond <see cref="Zero"/> is in the store.</summary>
    public bool Armed { get; private set; }

    /// <summary>Fuel held back from the store.</summary>
    public ulong Hidden => _limit - Horizon;

    /// <summary>Fuel used at the last save seen (exact there; a lower bound after).</summary>
    public ulong LastUsed { get; private set; }

    /// <summary>
    /// A fence was crossed since the host last set the store: the last save may then be the crossing's, which a plain run
    /// does not make (it matters only for a trap that does not save first).
    /// </summary>
    public bool Crossed { get; private set; }

    /// <summary>Fences crossed so far.</summary>
    public int Crossings { get; private set; }

    /// <summary>At an epoch callback: reads the store's fuel; returns the fuel to set, if any (a reserve to arm).</summary>
    public ulong? OnEpoch(ulong storeFuel)
    {
        if (storeFuel >= ReserveOnly)
        {
            return null; // armed, and no save since: nothing new
        }
        var used = Used(storeFuel);
        LastUsed = used;
        if (Armed && used >= Zero)
        {
            // Every epoch check follows a fuel check at the same point: a save at or past the fence means the fence was crossed.
            Zero = Horizon;
            Armed = false;
            Crossed = true;
            Crossings++;
        }
        if (Armed || Zero >= _limit)
        {
            return null;
        }
        Horizon = NextAbove(Zero);
        Armed = true;
        return ReserveOnly + (Horizon - Zero);
    }

    /// <summary>
    /// A host call charges <paramref name="cost"/> (the guest saved its count before the call): false when the fuel left
    /// is less, else the store's new fuel in <paramref name="storeFuel"/>, up to the next fence (unarmed).
    /// </summary>
    public bool TryCharge(ref ulong storeFuel, ulong cost)
    {
        var used = storeFuel >= ReserveOnly ? LastUsed : Used(storeFuel);
        var left = _limit - Math.Min(used, _limit);
        if (cost > left)
        {
            storeFuel = 0;
            Zero = Horizon = _limit;
            Armed = false;
            LastUsed = _limit;
            return false;
        }
        used += cost;
        LastUsed = used;
        Zero = Horizon = NextAbove(used);
        Armed = false;
        Crossed = false; // the host's write is the last, as in a plain run
        storeFuel = Zero - used;
        return true;
    }

    /// <summary>The fuel used when the run ended, as a plain run reports it (see <see cref="Crossed"/>).</summary>
    public ulong Consumed(ulong storeFuel)
    {
        if (storeFuel >= ReserveOnly)
        {
            return LastUsed;
        }
        var used = Used(storeFuel);
        if (Armed && used >= Zero)
        {
            Crossed = true;
            Crossings++;
        }
        return used;
    }

    /// <summary>Whether an out-of-fuel trap came with fuel still held here: a fence reached unarmed, not the limit.</summary>
    public bool IsFalseOutOfFuel => Horizon < _limit;

    private ulong Used(ulong storeFuel) => Horizon - Math.Min(storeFuel, Horizon);

    private ulong NextAbove(ulong used)
    {
        if (used < _first)
        {
            return _first;
        }
        var k = (UInt128)((used - _first) / _spacing) + 1;
        var next = _first + k * _spacing;
        return next >= _limit ? _limit : (ulong)next;
    }
}
