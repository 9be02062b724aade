using Potluck.Scheduler.Sandbox;

namespace Potluck.Scheduler.Tests.Sandbox;

/// <summary>The sandbox side of debit notes: a run stops at each slice boundary for payment, and only there.</summary>
public class DebitNoteSandboxTests
{
    private const ulong Slice = 1UL << 22;

    /// <summary>
    /// Spins forever, calling a function each round. Wasmtime writes the fuel used back to the store at calls (not at the
    /// epoch checks of a loop that makes none), so this is what a metered run looks like; see <see cref="SpinWithoutCalls"/>.
    /// </summary>
    internal const string SpinWithCalls = "(module (memory (export \"memory\") 1) (func $f) (func (export \"_start\") (loop $l (call $f) (br $l))))";

    /// <summary>Spins forever without a call: its fuel is seen only when it ends.</summary>
    internal const string SpinWithoutCalls = "(module (memory (export \"memory\") 1) (func (export \"_start\") (loop $l (br $l))))";

    private static byte[] Module(string wat) => Wasmtime.Module.ConvertText(wat);
    private SandboxFixture _fixture = null!;

    [SetUp]
    public void SetUp() => _fixture = new SandboxFixture();

    [TearDown]
    public void TearDown() => _fixture.Dispose();

    private WasmSandbox Sandbox() => _fixture.Create(o => o with { EpochTick = TimeSpan.FromMilliseconds(1) }, diskCache: false);

    [Test]
    public void Run_AsksForEachSliceInOrder_AndStopsAtTheFirstRefused()
    {
        var asked = new List<int>();
        var spec = new TaskSpec
        {
            Module = Module(SpinWithCalls),
            FuelLimit = 1_000_000_000,
            DebitNoteFuel = Slice,
            DebitNoteDue = i =>
            {
                asked.Add(i);
                return i < 3;
            },
        };

        Assert.Throws<OperationCanceledException>(() => Sandbox().Execute(spec, default), "an unpaid slice stops the run");
        Assert.That(asked, Is.EqualTo(new[] { 0, 1, 2, 3 }), "slices 0-2 paid, 3 refused; none skipped, none asked twice");
    }

    [Test]
    public void Run_PaidThroughout_EndsExactlyAsWithoutNotes()
    {
        var asked = new List<int>();
        var plain = new TaskSpec { Module = Module(SpinWithCalls), FuelLimit = 8 * Slice };
        var sliced = plain with
        {
            DebitNoteFuel = Slice,
            DebitNoteDue = i =>
            {
                asked.Add(i);
                return true;
            },
        };
        var sandbox = Sandbox();

        var a = sandbox.Execute(plain, default);
        var b = sandbox.Execute(sliced, default);

        Assert.That((b.Outcome, b.FuelConsumed), Is.EqualTo((a.Outcome, a.FuelConsumed)));
        Assert.That(b.StdoutSha256, Is.EqualTo(a.StdoutSha256));
        Assert.That(b.FuelConsumed, Is.EqualTo(8 * Slice));
        Assert.That(asked, Is.EqualTo(Enumerable.Range(0, asked.Count)), "in order from 0");
        Assert.That(asked, Has.Count.LessThanOrEqualTo(7), "never a note at or past the fuel limit: the final receipt pays that");
    }

    [Test]
    public void ALoopWithoutCalls_IsMeteredOnlyWhenItEnds()
    {
        // A known limit of metering by the store's fuel (the README says so): Wasmtime keeps a call-free loop's fuel in a
        // register, so no note comes due while it spins; the run still ends at its fuel limit, and the final receipt pays it.
        var asked = 0;
        var spec = new TaskSpec { Module = Module(SpinWithoutCalls), FuelLimit = 8 * Slice, DebitNoteFuel = Slice, DebitNoteDue = _ => ++asked > 0 };
        var result = Sandbox().Execute(spec, default);
        Assert.That((result.Outcome, result.FuelConsumed, asked), Is.EqualTo((SandboxOutcome.FuelExhausted, 8 * Slice, 0)));
    }
}
