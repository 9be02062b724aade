using Potluck.Node.Home;

namespace Potluck.Node.Simulation;

/// <summary>
/// The machine a simulated node runs on: idle, on mains, with no owner at the keyboard, its counters moving with the
/// mesh's virtual clock. Every node of a <see cref="SimulatedMesh"/> reads this instead of the host's <c>/proc</c>,
/// <c>/dev</c> and <c>/sys</c> (<see cref="ProcMachineProbe"/>): a thousand nodes in one process are not a thousand
/// machines, and what the host's own load or its terminal's last key press said would make a run depend on the machine
/// it ran on (a node with <see cref="PreferencesOptions.OnlyWhenIdle"/> would pause with the host's load). It was also a
/// cost that grew with the mesh: each node read about a dozen host files every 5 virtual seconds, and the virtual run
/// lasts longer as the mesh grows (the join takes N/50 s), so 2.2 % of a 500-node run's CPU.
/// Under the defaults (not only when idle, any hour, batteries allowed) no reading changes what a node does.
/// </summary>
public sealed class SimulatedMachineProbe(TimeProvider clock, int cores = 2) : IMachineProbe
{
    private readonly long _start = clock.GetTimestamp();

    /// <summary>Clock ticks per virtual second, as Linux's USER_HZ.</summary>
    private const long TicksPerSecond = 100;

    public MachineReading? Read()
    {
        // All of the machine's time so far is idle: nobody else uses its CPU (what the simulated node itself does is
        // not measured on the wall clock, so it is not counted as its own time either).
        var elapsed = clock.GetElapsedTime(_start);
        var total = (long)(elapsed.TotalSeconds * TicksPerSecond) * cores;
        return new MachineReading(total, total, 0, LastInput: null, OnBattery: null);
    }
}
