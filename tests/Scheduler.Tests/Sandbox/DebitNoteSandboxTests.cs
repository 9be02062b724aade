using Potluck.Scheduler.Sandbox;

namespace Potluck.Scheduler.Tests.Sandbox;

/// <summary>The sandbox side of debit notes: a run stops at each slice boundary for payment, and only there.</summary>
public class DebitNoteSandboxTests
{
    private const ulong Slice = 1UL << 22;

    /// <summary>Spins forever, calling a function each round: Wasmtime writes the fuel used back to the store at each call.</summary>
    internal const string SpinWithCalls = "(module (memory (export \"memory\") 1) (func $f) (func (export \"_start\") (loop $l (call $f) (br $l))))";

    /// <summary>Spins forever without a call: Wasmtime writes its fuel back only at the sandbox's fences (FuelFence).</summary>
    internal const string SpinWithoutCalls = "(module (memory (export \"memory\") 1) (func (export \"_start\") (loop $l (br $l))))";

    private static byte[] Module(string wat) => Wasmtime.Module.ConvertText(wat);
    private SandboxFixture _fixture = null!;

    [SetUp]
    public void SetUp() => _fixture = new SandboxFixture();

    [TearDown]
    public void TearDown() => _fixture.Dispose();

    private WasmSandbox Sandbox() => _fixture.Create(o => o with { EpochTick = TimeSpan.FromMilliseconds(1) }, diskCache: false);

    // A loop without calls: Wasmtime keeps its fuel in a register; the sandbox's fences (FuelFence) make it save the count
    // at each slice boundary, so notes come due as for any task.
    [TestCase(SpinWithCalls, TestName = "Run_AsksForEachSliceInOrder_AndStopsAtTheFirstRefused")]
    [TestCase(SpinWithoutCalls, TestName = "ALoopWithoutCalls_AsksForEachSliceInOrder_AndStopsAtTheFirstRefused")]
    public void AsksForEachSliceInOrder_AndStopsAtTheFirstRefused(string wat)
    {
        var asked = new List<int>();
        var spec = new TaskSpec
        {
            Module = Module(wat),
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

    [TestCase(SpinWithCalls, 8, TestName = "Run_PaidThroughout_EndsExactlyAsWithoutNotes")]
    [TestCase(SpinWithoutCalls, 64, TestName = "ALoopWithoutCalls_PaidThroughout_EndsExactlyAsWithoutNotes")]
    public void PaidThroughout_EndsExactlyAsWithoutNotes(string wat, int slices)
    {
        var asked = new List<int>();
        var plain = new TaskSpec { Module = Module(wat), FuelLimit = (ulong)slices * Slice };
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

        Assert.That((b.Outcome, b.FuelConsumed, b.StdoutSha256), Is.EqualTo((a.Outcome, a.FuelConsumed, a.StdoutSha256)));
        Assert.That(b.FuelConsumed, Is.EqualTo((ulong)slices * Slice));
        Assert.That(asked, Is.EqualTo(Enumerable.Range(0, asked.Count)), "in order from 0");
        Assert.That(asked, Has.Count.LessThanOrEqualTo(slices - 1), "never a note at or past the fuel limit: the final receipt pays that");
    }

    /// <summary>Counts to 2^24 without a call, then runs <paramref name="tail"/> (WAT instructions).</summary>
    private static string CountThen(string tail, string imports = "") =>
        "(module " + imports + " (memory (export \"memory\") 1) (func (export \"_start\") (local i32) " +
        "(loop $l (local.set 0 (i32.add (local.get 0) (i32.const 1))) (br_if $l (i32.lt_u (local.get 0) (i32.const 16777216)))) " + tail + "))";

    private const string ProcExit = "(import \"wasi_snapshot_preview1\" \"proc_exit\" (func $exit (param i32)))";
    private const string RandomGet = "(import \"wasi_snapshot_preview1\" \"random_get\" (func $random (param i32 i32) (result i32)))";

    [TestCase("div", "(drop (i32.div_u (i32.const 1) (i32.const 0)))", "")]
    [TestCase("load", "(drop (i32.load (i32.const 70000)))", "")]
    [TestCase("unreachable", "unreachable", "")]
    [TestCase("return", "", "")]
    [TestCase("exit", "(call $exit (i32.const 3))", ProcExit)]
    [TestCase("host call, then trap", "(drop (call $random (i32.const 0) (i32.const 64))) (drop (i32.div_u (i32.const 1) (i32.const 0)))", RandomGet)]
    public void ALoopWithoutCalls_ThenAnEnd_EndsExactlyAsWithoutNotes(string name, string tail, string imports)
    {
        // A trap Wasmtime does not save the fuel before (a checked instruction) reports the fuel last saved; after a fence
        // that can be the fence's save, so the sandbox runs the task once more without fences for the plain run's figure.
        var plain = new TaskSpec { Module = Module(CountThen(tail, imports)), FuelLimit = 1_000_000_000 };
        var asked = new List<int>();
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

        Assert.That(a.Outcome, Is.Not.EqualTo(SandboxOutcome.FuelExhausted), name);
        Assert.That((b.Outcome, b.ExitCode, b.FuelConsumed, b.Trap?.Code, b.StdoutSha256), Is.EqualTo((a.Outcome, a.ExitCode, a.FuelConsumed, a.Trap?.Code, a.StdoutSha256)), name);
        Assert.That(a.MeteringRuns, Is.EqualTo(1), "a plain run runs once");
        Assert.That(asked, Is.EqualTo(Enumerable.Range(0, asked.Count)), "in order from 0");
        if (name is "div" or "load")
        {
            // The count (8 fuel a round, 2^24 rounds) passes the first fence at 2^22: crossed, or reached unarmed; either way run again.
            Assert.That(b.MeteringRuns, Is.GreaterThanOrEqualTo(2), "the run with fences does not report a trap's fuel");
        }
    }

    [Test]
    public void AFenceReachedBeforeItIsArmed_IsRunAgainWithWiderFences_AndEndsAsWithoutNotes()
    {
        // No epoch tick comes (an hour's tick, so fences one slice apart, the smallest, from a test hook): the first fence is
        // reached unarmed and traps early, never as the result: the sandbox runs the task again with fences at 2, then 4
        // slices, then none (8 slices is the limit).
        var sandbox = _fixture.Create(o => o with { EpochTick = TimeSpan.FromHours(1) }, diskCache: false);
        sandbox.FirstFenceSpacing = (slice, _) => slice;
        var plain = new TaskSpec { Module = Module(SpinWithoutCalls), FuelLimit = 8 * Slice };
        var asked = 0;
        var sliced = plain with { DebitNoteFuel = Slice, DebitNoteDue = _ => ++asked > 0 };

        var a = sandbox.Execute(plain, default);
        var b = sandbox.Execute(sliced, default);

        Assert.That((b.Outcome, b.FuelConsumed), Is.EqualTo((a.Outcome, a.FuelConsumed)));
        Assert.That((a.Outcome, a.FuelConsumed), Is.EqualTo((SandboxOutcome.FuelExhausted, 8 * Slice)));
        Assert.That((b.MeteringRuns, asked), Is.EqualTo((4, 0)), "fences at 1, 2, 4 slices reached unarmed; then a plain run; no tick, no note");
    }

    [Test]
    public void HostCallsInsideTheLoop_ChargeAgainstTheWholeLimit_AndEndAsWithoutNotes()
    {
        // Part of the limit is held outside the store while fences are up: host calls charge against the whole, so a run never
        // ends early for fuel the store did not hold.
        var wat = "(module " + RandomGet + " (memory (export \"memory\") 1) (func (export \"_start\") (local i32) (local i32) " +
            "(loop $outer (local.set 0 (i32.const 0)) " +
            "(loop $l (local.set 0 (i32.add (local.get 0) (i32.const 1))) (br_if $l (i32.lt_u (local.get 0) (i32.const 100000)))) " +
            "(drop (call $random (i32.const 0) (i32.const 4096))) (local.set 1 (i32.add (local.get 1) (i32.const 1))) (br $outer))))";
        var plain = new TaskSpec { Module = Module(wat), FuelLimit = 40 * Slice };
        var asked = new List<int>();
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
        Assert.That(a.Outcome, Is.EqualTo(SandboxOutcome.FuelExhausted));
        Assert.That(asked, Is.EqualTo(Enumerable.Range(0, asked.Count)));
    }

    [TestCase("hashchain", null, "20000")]
    [TestCase("matmul", null, "96")]
    [TestCase("render", null, "120", "90", "255")]
    [TestCase("clockrand", null)]
    [TestCase("loop", "testmods")]
    [TestCase("spew", "testmods")]
    [TestCase("grow", "testmods")]
    [TestCase("trap", "testmods")]
    [TestCase("exitcode", "testmods", "7")]
    public void EveryModule_WithNotesAtTheSmallestSlice_EndsExactlyAsWithoutNotes(string name, string? folder, params string[] args)
    {
        // Fuel before and after: the same task with notes (paid at once) and without, on one sandbox, fences every 2^20 fuel.
        var plain = new TaskSpec { Module = Samples.Load(name, folder), Args = args, FuelLimit = 1UL << 27 };
        var asked = new List<int>();
        var sliced = plain with
        {
            DebitNoteFuel = 1UL << 20,
            DebitNoteDue = i =>
            {
                asked.Add(i);
                return true;
            },
        };
        var input = "seed"u8.ToArray();
        var sandbox = Sandbox();

        var a = sandbox.Execute(plain, input);
        var b = sandbox.Execute(sliced, input);

        TestContext.Out.WriteLine($"{name}: {a.Outcome} {a.FuelConsumed} fuel; with notes {b.Outcome} {b.FuelConsumed} fuel, {asked.Count} notes, {b.MeteringRuns} run(s)");
        Assert.That((b.Outcome, b.ExitCode, b.FuelConsumed, b.Trap?.Code), Is.EqualTo((a.Outcome, a.ExitCode, a.FuelConsumed, a.Trap?.Code)));
        Assert.That((b.StdoutSha256, b.StderrSha256), Is.EqualTo((a.StdoutSha256, a.StderrSha256)));
        Assert.That(asked, Is.EqualTo(Enumerable.Range(0, asked.Count)), "in order from 0");
        Assert.That(asked, Has.Count.LessThanOrEqualTo((int)(a.FuelConsumed >> 20)), "a note only for a boundary the run passed");
    }

    [Test]
    public void ALoopWithoutCalls_WithNotes_StillEndsAtItsDeadline()
    {
        // Fuel bounds the loop's CPU only up to the limit; the wall-clock deadline is the epoch callback's, which fences leave alone.
        var asked = new List<int>();
        var spec = new TaskSpec
        {
            Module = Module(SpinWithoutCalls),
            FuelLimit = 1UL << 50,
            Deadline = TimeSpan.FromMilliseconds(300),
            DebitNoteFuel = Slice,
            DebitNoteDue = i =>
            {
                asked.Add(i);
                return true;
            },
        };
        var sandbox = _fixture.Create(o => o with { EpochTick = TimeSpan.FromMilliseconds(1), DefaultFuel = 1UL << 50 }, diskCache: false);

        var result = sandbox.Execute(spec, default);

        Assert.That((result.Outcome, result.IsDeterministic), Is.EqualTo((SandboxOutcome.WallClockTimeout, false)));
        Assert.That(asked, Is.EqualTo(Enumerable.Range(0, asked.Count)));
        Assert.That(result.FuelConsumed, Is.GreaterThanOrEqualTo((ulong)asked.Count * Slice), "at least what the notes asked for");
    }

    [Test]
    public void ALoopWithoutCalls_ThenACheckedTrap_ReportsTheFuelLastSaved_PlainOrNot()
    {
        // A limit the README states: Wasmtime saves no fuel before a trap of a checked instruction (a division by zero here),
        // so the run reports the fuel saved last, before the loop (2^24 rounds of 8 fuel); with notes too, for the same figure.
        var plain = new TaskSpec { Module = Module(CountThen("(drop (i32.div_u (i32.const 1) (i32.const 0)))")), FuelLimit = 1UL << 30 };
        var a = Sandbox().Execute(plain, default);
        Assert.That((a.Outcome, a.Trap?.Code), Is.EqualTo((SandboxOutcome.Trapped, (SandboxTrapCode?)SandboxTrapCode.IntegerDivisionByZero)));
        Assert.That(a.FuelConsumed, Is.LessThan(1UL << 20), "the loop's 2^27 fuel is not in the figure");
    }
}
