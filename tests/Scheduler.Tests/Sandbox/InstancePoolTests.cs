using Potluck.Scheduler.Sandbox;

namespace Potluck.Scheduler.Tests.Sandbox;

/// <summary>
/// The sandbox's pooled instances (<see cref="SandboxOptions.InstanceSlots"/>): a pooled run gives exactly what an unpooled
/// run gives (outcome, exit code, fuel, output: providers on either setting must agree, or honest ones would contradict each
/// other's results), a reused slot holds nothing of the run before, runs beyond the slots wait instead of failing, and a
/// process holds many pooled sandboxes.
/// </summary>
public class InstancePoolTests
{
    private SandboxFixture _fixture = null!;

    [SetUp]
    public void SetUp() => _fixture = new SandboxFixture();

    [TearDown]
    public void TearDown() => _fixture.Dispose();

    private const string Exit = """(import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))""";

    /// <summary>Grows its memory to 2 MiB (past the 1 MiB a slot keeps resident) and fills it with 0xAB.</summary>
    private static readonly byte[] Writer = Wasmtime.Module.ConvertText($$"""
        (module {{Exit}} (memory (export "memory") 1)
          (func (export "_start")
            (drop (memory.grow (i32.const 31)))
            (memory.fill (i32.const 0) (i32.const 0xAB) (i32.const 2097152))))
        """);

    /// <summary>Grows its memory to 2 MiB and exits 1 if any byte of it is not zero, else 0; <paramref name="data"/> plants a byte.</summary>
    private static byte[] Reader(bool data = false) => Wasmtime.Module.ConvertText($$"""
        (module {{Exit}} (memory (export "memory") 1)
          {{(data ? """(data (i32.const 65000) "\ab")""" : "")}}
          (func (export "_start") (local $i i32)
            (drop (memory.grow (i32.const 31)))
            (block $done
              (loop $scan
                (br_if $done (i32.ge_u (local.get $i) (i32.const 2097152)))
                (if (i64.ne (i64.load (local.get $i)) (i64.const 0)) (then (call $exit (i32.const 1))))
                (local.set $i (i32.add (local.get $i) (i32.const 8)))
                (br $scan)))))
        """);

    private static TaskSpec Wat(string body, ulong? fuel = null) => new()
    {
        Module = Wasmtime.Module.ConvertText($$"""(module {{Exit}} {{body}})"""),
        FuelLimit = fuel,
    };

    public static IEnumerable<TestCaseData> Tasks()
    {
        TestCaseData Case(string name, TaskSpec spec, string input = "") => new TestCaseData(spec, input) { TestName = $"{{m}}({name})" };
        yield return Case("exit 0", new TaskSpec { Module = Samples.TestModule("exitcode"), Args = ["0"] });
        yield return Case("exit 3", new TaskSpec { Module = Samples.TestModule("exitcode"), Args = ["3"] });
        yield return Case("division by zero", new TaskSpec { Module = Samples.TestModule("trap") });
        yield return Case("memory grown to the cap", new TaskSpec { Module = Samples.TestModule("grow"), MemoryLimitBytes = 8L << 20 });
        yield return Case("out of fuel", new TaskSpec { Module = Samples.TestModule("loop"), FuelLimit = 5_000_000 });
        yield return Case("stack overflow", new TaskSpec { Module = Samples.TestModule("recurse") });
        yield return Case("output over the limit", new TaskSpec { Module = Samples.TestModule("spew") });
        yield return Case("hash chain", new TaskSpec { Module = Samples.Load("hashchain"), Args = ["2000"] }, "seed");
        yield return Case("memory.grow past the task's limit",
            Wat("""(memory (export "memory") 1) (func (export "_start") (call $exit (i32.add (i32.const 10) (memory.grow (i32.const 200)))))""")
                with { MemoryLimitBytes = 4L << 20 });
        yield return Case("table.grow past a million elements",
            Wat("""(memory (export "memory") 1) (table 10 funcref) (func (export "_start") (call $exit (i32.add (i32.const 10) (table.grow (ref.null func) (i32.const 2000000)))))"""));
        yield return Case("table.grow within the limit",
            Wat("""(memory (export "memory") 1) (table 10 funcref) (func (export "_start") (call $exit (i32.and (i32.const 255) (table.grow (ref.null func) (i32.const 500000)))))"""));
        yield return Case("five tables",
            Wat("""(memory (export "memory") 1) (table 1 funcref) (table 1 funcref) (table 1 funcref) (table 1 funcref) (table 1 funcref) (func (export "_start"))"""));
        yield return Case("two memories",
            Wat("""(memory (export "memory") 1) (memory 1) (func (export "_start"))"""));
        yield return Case("initial memory over the cap",
            Wat("""(memory (export "memory") 100) (func (export "_start"))""") with { MemoryLimitBytes = 4L << 20 });
    }

    [TestCaseSource(nameof(Tasks))]
    public void PooledRun_GivesWhatAnUnpooledRunGives(TaskSpec spec, string input)
    {
        var pooled = _fixture.Create(o => o with { InstanceSlots = 2, MaxStdoutBytes = 64 * 1024 }, diskCache: false);
        var unpooled = _fixture.Create(o => o with { InstanceSlots = 0, MaxStdoutBytes = 64 * 1024 }, diskCache: false);
        var bytes = System.Text.Encoding.UTF8.GetBytes(input);

        // Twice on the pooled one: the second run takes a slot the first one used.
        var a = pooled.Execute(spec, bytes);
        var b = pooled.Execute(spec, bytes);
        var c = unpooled.Execute(spec, bytes);

        foreach (var r in new[] { a, b })
        {
            Assert.That((r.Outcome, r.ExitCode, r.FuelConsumed, r.Trap?.Code, r.IsDeterministic),
                Is.EqualTo((c.Outcome, c.ExitCode, c.FuelConsumed, c.Trap?.Code, c.IsDeterministic)), r.Error ?? c.Error);
            Assert.That(r.StdoutSha256, Is.EqualTo(c.StdoutSha256));
            Assert.That(r.StderrSha256, Is.EqualTo(c.StderrSha256));
        }
    }

    [Test]
    public void ReusedSlot_HoldsNothingOfTheRunBefore()
    {
        var sandbox = _fixture.Create(o => o with { InstanceSlots = 1 }, diskCache: false);

        var wrote = sandbox.Execute(new TaskSpec { Module = Writer }, default);
        var read = sandbox.Execute(new TaskSpec { Module = Reader() }, default);
        // The reader does see a byte that is there (its own data segment): its zero check can fail.
        var planted = sandbox.Execute(new TaskSpec { Module = Reader(data: true) }, default);

        Assert.That(wrote.Outcome, Is.EqualTo(SandboxOutcome.Success), wrote.Error);
        Assert.That((read.Outcome, read.ExitCode), Is.EqualTo((SandboxOutcome.Success, (int?)0)), read.Error);
        Assert.That((planted.Outcome, planted.ExitCode), Is.EqualTo((SandboxOutcome.ExitedNonZero, (int?)1)), planted.Error);
    }

    [Test]
    public async Task MoreRunsAtOnceThanSlots_AllComplete_NoneRefused()
    {
        var sandbox = _fixture.Create(o => o with { InstanceSlots = 2 }, diskCache: false);
        var spec = new TaskSpec { Module = Samples.TestModule("loop"), FuelLimit = 30_000_000 };

        var results = await Task.WhenAll(Enumerable.Range(0, 12).Select(_ => sandbox.ExecuteAsync(spec, default)));

        Assert.That(results.Select(r => (r.Outcome, r.FuelConsumed)),
            Is.All.EqualTo((SandboxOutcome.FuelExhausted, 30_000_000UL)), string.Join("; ", results.Select(r => r.Error)));
    }

    [Test]
    public void AProcessWithoutALimit_StillHasTheUserAddressSpaceAsOne()
    {
        Assume.That(OperatingSystem.IsLinux(), "read from /proc");
        var headroom = WasmSandbox.AddressSpaceHeadroom();

        Assert.That(headroom, Is.Not.Null.And.LessThan(WasmSandbox.UserAddressSpace));
        // A process already mapping all but 8 GiB of it pools nothing more: thousands of pools would not fit.
        Assert.That(WasmSandbox.SlotsThatFit(16, 8L << 30), Is.Zero);
    }

    [Test]
    public void ManyPooledSandboxesInOneProcess_EachRuns()
    {
        // Each pool reserves address space, not memory, and a few mappings: 64 of them at once in one process.
        var spec = new TaskSpec { Module = Reader() };
        var sandboxes = Enumerable.Range(0, 64).Select(_ => _fixture.Create(o => o with { InstanceSlots = 16 }, diskCache: false)).ToList();

        var results = sandboxes.Select(s => s.Execute(spec, default)).ToList();

        Assert.That(results.Select(r => (r.Outcome, r.ExitCode)), Is.All.EqualTo((SandboxOutcome.Success, (int?)0)));
    }

    [TestCase(16, null, 16)]
    [TestCase(0, null, 0)]
    [TestCase(16, 0L, 0)]
    [TestCase(16, 20 * WasmSandbox.AddressSpacePerSlot, 10)]
    [TestCase(16, 100 * WasmSandbox.AddressSpacePerSlot, 16)]
    [TestCase(16, 3 * WasmSandbox.AddressSpacePerSlot, 0)]
    public void UnderAnAddressSpaceLimit_ThePoolTakesAtMostHalfTheHeadroom_AndNoPoolBelowTwoSlots(int asked, long? headroom, int pooled) =>
        Assert.That(WasmSandbox.SlotsThatFit(asked, headroom), Is.EqualTo(pooled));

    [Test]
    public void WithoutALimit_TheSandboxPoolsWhatItIsAsked()
    {
        Assume.That(WasmSandbox.AddressSpaceHeadroom(), Is.Null.Or.GreaterThan(1L << 40), "this process runs under ulimit -v");
        Assert.That(_fixture.Create(o => o with { InstanceSlots = 5 }, diskCache: false).PooledSlots, Is.EqualTo(5));
        Assert.That(_fixture.Create(o => o with { InstanceSlots = 0 }, diskCache: false).PooledSlots, Is.Zero);
    }

    [TestCase(-1)]
    [TestCase(SandboxOptions.MaxInstanceSlots + 1)]
    public void InstanceSlotsOutOfRange_AreRefused(int slots) =>
        Assert.That(() => _fixture.Create(o => o with { InstanceSlots = slots }, diskCache: false),
            Throws.TypeOf<ArgumentOutOfRangeException>().With.Message.Contains(nameof(SandboxOptions.InstanceSlots)));
}
