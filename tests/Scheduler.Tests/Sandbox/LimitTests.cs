using System.Text;
using Potluck.Scheduler.Sandbox;

namespace Potluck.Scheduler.Tests.Sandbox;

public class LimitTests
{
    private SandboxFixture _fixture = null!;
    private WasmSandbox _sandbox = null!;

    [SetUp]
    public void SetUp()
    {
        _fixture = new SandboxFixture();
        _sandbox = _fixture.Create(o => o with
        {
            MaxStdoutBytes = 64 * 1024,
            MaxMemoryBytes = 64L * 1024 * 1024,
        }, diskCache: false);
    }

    [TearDown]
    public void TearDown() => _fixture.Dispose();

    [TestCase(new byte[0])]
    [TestCase(new byte[] { 0x00, 0x61, 0x73, 0x6d })]
    [TestCase(new byte[] { 0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0xff })]
    [TestCase(new byte[] { 0x7f, 0x45, 0x4c, 0x46, 0x02, 0x01, 0x01, 0x00 })]
    public void MalformedBytes_AreInvalidModule(byte[] bytes)
    {
        var result = _sandbox.Execute(new TaskSpec { Module = bytes }, default);

        Assert.That(result.Outcome, Is.EqualTo(SandboxOutcome.InvalidModule));
        Assert.That(result.Error, Is.Not.Empty);
        Assert.That(result.FuelConsumed, Is.Zero);
    }

    [Test]
    public void TruncatedSample_IsInvalidModule()
    {
        var module = Samples.Load("hashchain");

        var result = _sandbox.Execute(new TaskSpec { Module = module.AsMemory(0, module.Length / 2) }, default);

        Assert.That(result.Outcome, Is.EqualTo(SandboxOutcome.InvalidModule));
    }

    [Test]
    public void NamedHashThatDoesNotMatch_IsInvalidModule()
    {
        var spec = new TaskSpec { Module = Samples.Load("hashchain"), ModuleSha256 = new string('0', 64), Args = ["1"] };

        var result = _sandbox.Execute(spec, default);

        Assert.That(result.Outcome, Is.EqualTo(SandboxOutcome.InvalidModule));
        Assert.That(result.Error, Does.Contain("SHA-256"));
    }

    [TestCase("""(module (import "env" "leak" (func)) (memory (export "memory") 1) (func (export "_start")))""", "env.leak")]
    [TestCase("""(module (import "wasi_snapshot_preview1" "sock_open" (func)) (memory (export "memory") 1) (func (export "_start")))""", "sock_open")]
    [TestCase("""(module (memory (export "memory") 1) (func (export "main")))""", "_start")]
    [TestCase("""(module (func (export "_start")))""", "memory")]
    public void ModulesThatAreNotPlainWasiCommands_AreInvalidModule(string wat, string mentioned)
    {
        var result = _sandbox.Execute(new TaskSpec { Module = Wasmtime.Module.ConvertText(wat) }, default);

        Assert.That(result.Outcome, Is.EqualTo(SandboxOutcome.InvalidModule));
        Assert.That(result.Error, Does.Contain(mentioned));
    }

    [TestCase("""(module (type $t (func)) (global (export "g") (ref null $t) (ref.null $t)) (memory (export "memory") 1) (func (export "_start")))""")]
    [TestCase("""(module (type $s (struct (field i32))) (func (export "_start") (drop (struct.new $s (i32.const 1)))) (memory (export "memory") 1))""")]
    public void TypedReferencesAndGcTypes_AreInvalidModule_NotAHostCrash(string wat)
    {
        // Regression: inspecting such exports used to abort the process inside Wasmtime's C API.
        var result = _sandbox.Execute(new TaskSpec { Module = Wasmtime.Module.ConvertText(wat) }, default);

        Assert.That(result.Outcome, Is.EqualTo(SandboxOutcome.InvalidModule));
    }

    [Test]
    public void WrongSignatureForAWasiImport_IsInvalidModule()
    {
        var wat = """(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32))) (memory (export "memory") 1) (func (export "_start")))""";

        var result = _sandbox.Execute(new TaskSpec { Module = Wasmtime.Module.ConvertText(wat) }, default);

        Assert.That(result.Outcome, Is.EqualTo(SandboxOutcome.InvalidModule));
    }

    [Test]
    public void InfiniteLoop_RunsOutOfFuel_ConsumingExactlyTheBudget()
    {
        var spec = new TaskSpec { Module = Samples.TestModule("loop"), FuelLimit = 5_000_000 };

        var result = _sandbox.Execute(spec, default);

        Assert.That(result.Outcome, Is.EqualTo(SandboxOutcome.FuelExhausted));
        Assert.That(result.FuelConsumed, Is.EqualTo(5_000_000UL));
        Assert.That(result.IsDeterministic, Is.True);
    }

    [Test]
    public void FuelLimit_AboveTheNodeDefault_IsCappedAtIt()
    {
        var sandbox = _fixture.Create(o => o with { DefaultFuel = 1_000_000 }, diskCache: false);

        var result = sandbox.Execute(new TaskSpec { Module = Samples.TestModule("loop"), FuelLimit = ulong.MaxValue }, default);

        Assert.That(result.Outcome, Is.EqualTo(SandboxOutcome.FuelExhausted));
        Assert.That(result.FuelConsumed, Is.EqualTo(1_000_000UL));
    }

    [Test]
    public void UnboundedMallocGrowth_IsMemoryLimitExceeded()
    {
        var spec = new TaskSpec { Module = Samples.TestModule("grow"), MemoryLimitBytes = 16L * 1024 * 1024 };

        var first = _sandbox.Execute(spec, default);
        var second = _sandbox.Execute(spec, default);

        Assert.That(first.Outcome, Is.EqualTo(SandboxOutcome.MemoryLimitExceeded));
        Assert.That(Encoding.ASCII.GetString(first.Stderr.Span), Does.StartWith("malloc failed after 1"));
        Assert.That(second.Outcome, Is.EqualTo(first.Outcome));
        Assert.That(second.FuelConsumed, Is.EqualTo(first.FuelConsumed));
    }

    [Test]
    public void RawMemoryGrowLoop_IsMemoryLimitExceeded()
    {
        var wat = """
            (module (memory (export "memory") 1)
              (func (export "_start")
                (loop $again
                  (br_if $again (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
                unreachable))
            """;

        var result = _sandbox.Execute(new TaskSpec { Module = Wasmtime.Module.ConvertText(wat), MemoryLimitBytes = 1 << 20 }, default);

        Assert.That(result.Outcome, Is.EqualTo(SandboxOutcome.MemoryLimitExceeded));
    }

    [Test]
    public void InitialMemoryAboveTheCap_IsMemoryLimitExceeded()
    {
        var wat = """(module (memory (export "memory") 200) (func (export "_start")))""";

        var result = _sandbox.Execute(new TaskSpec { Module = Wasmtime.Module.ConvertText(wat), MemoryLimitBytes = 1 << 20 }, default);

        Assert.That(result.Outcome, Is.EqualTo(SandboxOutcome.MemoryLimitExceeded));
    }

    [Test]
    public void EndlessOutput_IsOutputLimitExceeded_KeepingExactlyTheCap()
    {
        var result = _sandbox.Execute(new TaskSpec { Module = Samples.TestModule("spew") }, default);

        Assert.That(result.Outcome, Is.EqualTo(SandboxOutcome.OutputLimitExceeded));
        Assert.That(result.Stdout.Length, Is.EqualTo(64 * 1024));
        Assert.That(Encoding.ASCII.GetString(result.Stdout.Span), Does.StartWith("line 0: the quick brown fox"));
    }

    [Test]
    public void DivisionByZero_IsTrappedWithItsCode_KeepingEarlierOutput()
    {
        var result = _sandbox.Execute(new TaskSpec { Module = Samples.TestModule("trap") }, default);

        Assert.That(result.Outcome, Is.EqualTo(SandboxOutcome.Trapped));
        Assert.That(result.Trap!.Code, Is.EqualTo(SandboxTrapCode.IntegerDivisionByZero));
        Assert.That(result.Trap.Description, Is.Not.Empty);
        Assert.That(result.Trap.IsNonDeterministicPoint, Is.False);
        Assert.That(result.IsDeterministic, Is.True);
        Assert.That(Encoding.ASCII.GetString(result.Stdout.Span), Is.EqualTo("before\n"));
    }

    [Test]
    public void UnboundedRecursion_IsAStackOverflowTrap_MarkedNonDeterministic()
    {
        var result = _sandbox.Execute(new TaskSpec { Module = Samples.TestModule("recurse") }, default);

        Assert.That(result.Outcome, Is.EqualTo(SandboxOutcome.Trapped));
        Assert.That(result.Trap!.Code, Is.EqualTo(SandboxTrapCode.StackOverflow));
        Assert.That(result.Trap.IsNonDeterministicPoint, Is.True);
        Assert.That(result.IsDeterministic, Is.False);
    }

    [Test]
    public async Task HugeFuelBudgetPastAShortDeadline_IsWallClockTimeout()
    {
        var spec = new TaskSpec
        {
            Module = Samples.TestModule("loop"),
            FuelLimit = ulong.MaxValue,
            Deadline = TimeSpan.FromMilliseconds(200),
        };
        // A budget no machine burns in 200 ms (a fast idle core runs ~10^10 fuel a second in this loop).
        var sandbox = _fixture.Create(o => o with { DefaultFuel = 1_000_000_000_000_000 }, diskCache: false);

        var result = await sandbox.ExecuteAsync(spec, default);

        Assert.That(result.Outcome, Is.EqualTo(SandboxOutcome.WallClockTimeout));
        Assert.That(result.IsDeterministic, Is.False);
        Assert.That(result.FuelConsumed, Is.GreaterThan(0UL));
    }

    [Test]
    public void Cancellation_EndsARunningTask_WithOperationCanceled()
    {
        using var cts = new CancellationTokenSource();
        var spec = new TaskSpec { Module = Samples.TestModule("loop"), FuelLimit = ulong.MaxValue };

        var run = _sandbox.ExecuteAsync(spec, default, cts.Token);
        cts.Cancel();

        Assert.That(async () => await run, Throws.InstanceOf<OperationCanceledException>());
    }

    [Test]
    public void TooManyArguments_AreRefused()
    {
        var sandbox = _fixture.Create(o => o with { MaxArgs = 2 }, diskCache: false);

        var result = sandbox.Execute(new TaskSpec { Module = Samples.Load("hashchain"), Args = ["1", "2", "3"] }, default);

        Assert.That(result.Outcome, Is.EqualTo(SandboxOutcome.InvalidModule));
    }

    [Test]
    public async Task EveryFailure_LeavesTheSandboxUsableForTheNextTask()
    {
        var ok = new TaskSpec { Module = Samples.Load("hashchain"), Args = ["10"] };
        var expected = Samples.HashChain("x"u8.ToArray(), 10);
        TaskSpec[] failures =
        [
            new() { Module = new byte[] { 1, 2, 3 } },
            new() { Module = Samples.TestModule("loop"), FuelLimit = 1_000_000 },
            new() { Module = Samples.TestModule("grow"), MemoryLimitBytes = 8L * 1024 * 1024 },
            new() { Module = Samples.TestModule("spew") },
            new() { Module = Samples.TestModule("trap") },
            new() { Module = Samples.TestModule("recurse") },
            new() { Module = Samples.TestModule("loop"), FuelLimit = ulong.MaxValue, Deadline = TimeSpan.FromMilliseconds(50) },
        ];

        var baseline = _sandbox.Execute(ok, "x"u8.ToArray());
        foreach (var failing in failures)
        {
            var failed = await _sandbox.ExecuteAsync(failing, default);
            Assert.That(failed.Outcome, Is.Not.EqualTo(SandboxOutcome.Success));

            var after = _sandbox.Execute(ok, "x"u8.ToArray());
            Assert.That(after.Outcome, Is.EqualTo(SandboxOutcome.Success), $"after {failed.Outcome}");
            Assert.That(Encoding.ASCII.GetString(after.Stdout.Span), Is.EqualTo(expected));
            Assert.That(after.FuelConsumed, Is.EqualTo(baseline.FuelConsumed));
        }
    }
}

/// <summary>Host calls charge fuel in proportion to the bytes they touch, so fuel bounds the CPU a task can buy.</summary>
[Category("Adversarial")]
public class HostCallFuelTests
{
    /// <summary>
    /// A module with 64 MiB of memory whose _start calls random_get(0, <paramref name="length"/>) <paramref name="calls"/>
    /// times: hand-assembled, as no WebAssembly toolchain is needed for the tests.
    /// </summary>
    internal static byte[] RandomGetModule(int length, int calls)
    {
        static byte[] Section(byte id, params byte[][] parts)
        {
            var content = parts.SelectMany(p => p).ToArray();
            return [id, .. Leb((uint)content.Length), .. content];
        }
        static byte[] Leb(uint v)
        {
            var bytes = new List<byte>();
            do
            {
                var b = (byte)(v & 0x7f);
                v >>= 7;
                bytes.Add(v != 0 ? (byte)(b | 0x80) : b);
            }
            while (v != 0);
            return [.. bytes];
        }
        static byte[] SLeb(int v)
        {
            var bytes = new List<byte>();
            while (true)
            {
                var b = (byte)(v & 0x7f);
                v >>= 7;
                if ((v == 0 && (b & 0x40) == 0) || (v == -1 && (b & 0x40) != 0))
                {
                    bytes.Add(b);
                    return [.. bytes];
                }
                bytes.Add((byte)(b | 0x80));
            }
        }
        static byte[] Name(string s) => [.. Leb((uint)s.Length), .. Encoding.ASCII.GetBytes(s)];
        var call = new byte[][] { [0x41, 0x00], [0x41, .. SLeb(length)], [0x10, 0x00, 0x1a] }.SelectMany(p => p).ToArray();
        byte[] body = [0x00, .. Enumerable.Repeat(call, calls).SelectMany(c => c), 0x0b];
        return
        [
            0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
            .. Section(1, [0x02, 0x60, 0x02, 0x7f, 0x7f, 0x01, 0x7f, 0x60, 0x00, 0x00]),
            .. Section(2, [0x01], Name("wasi_snapshot_preview1"), Name("random_get"), [0x00, 0x00]),
            .. Section(3, [0x01, 0x01]),
            .. Section(5, [0x01, 0x00], Leb(1024)),
            .. Section(7, [0x02], Name("memory"), [0x02, 0x00], Name("_start"), [0x00, 0x01]),
            .. Section(10, [0x01], Leb((uint)body.Length), body),
        ];
    }

    [Test]
    public void RandomGetOf64MiB_WithLittleFuel_RunsOutOfFuel_WithoutFillingIt()
    {
        using var fixture = new SandboxFixture();
        var sandbox = fixture.Create(o => o with { MaxMemoryBytes = 128L << 20 }, diskCache: false);
        var module = RandomGetModule(64 << 20, 16);

        var result = sandbox.Execute(new TaskSpec { Module = module, FuelLimit = 1_000_000 }, default);

        Assert.That(result.Outcome, Is.EqualTo(SandboxOutcome.FuelExhausted), result.Error);
        Assert.That(result.FuelConsumed, Is.EqualTo(1_000_000), "a run out of fuel used all of it");
        Assert.That(result.IsDeterministic, Is.True, "the same task stops at the same call everywhere");
    }

    [Test]
    public void RandomGet_IsChargedPerByte_SoFuelBoundsItsCost()
    {
        using var fixture = new SandboxFixture();
        var sandbox = fixture.Create(o => o with { MaxMemoryBytes = 128L << 20 }, diskCache: false);

        var small = sandbox.Execute(new TaskSpec { Module = RandomGetModule(1024, 1), FuelLimit = 10_000_000 }, default);
        var large = sandbox.Execute(new TaskSpec { Module = RandomGetModule(1024 * 1024, 1), FuelLimit = 100_000_000 }, default);

        Assert.That(small.Outcome, Is.EqualTo(SandboxOutcome.Success), small.Error);
        Assert.That(large.Outcome, Is.EqualTo(SandboxOutcome.Success), large.Error);
        Assert.That(large.FuelConsumed - small.FuelConsumed, Is.EqualTo((1024 * 1024 - 1024) * 16), "16 fuel per random byte");
    }
}
