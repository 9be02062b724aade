using System.Text;
using Potluck.Scheduler.Sandbox;

namespace Potluck.Scheduler.Tests.Sandbox;

public class WasiTests
{
    private SandboxFixture _fixture = null!;
    private WasmSandbox _sandbox = null!;

    [SetUp]
    public void SetUp()
    {
        _fixture = new SandboxFixture();
        _sandbox = _fixture.Create(diskCache: false);
    }

    [TearDown]
    public void TearDown() => _fixture.Dispose();

    [Test]
    public void ClocksAndRandom_AreVirtualAndTheSameEveryRun()
    {
        var spec = new TaskSpec { Module = Samples.Load("clockrand") };

        var first = _sandbox.Execute(spec, default);
        var second = _sandbox.Execute(spec, default);

        Assert.That(first.Outcome, Is.EqualTo(SandboxOutcome.Success), Encoding.UTF8.GetString(first.Stderr.Span));
        var text = Encoding.ASCII.GetString(first.Stdout.Span);
        Assert.That(text, Does.StartWith("realtime=0.000000000\n"), "the virtual clock starts at 0");
        Assert.That(text, Does.Contain("res=1000\n"), "clock resolution is the 1 µs virtual step");
        Assert.That(text, Does.Contain("after-sleep=0.005"), "usleep(5000) jumps the virtual clock by 5 ms");
        Assert.That(second.Stdout.ToArray(), Is.EqualTo(first.Stdout.ToArray()));
        Assert.That(second.FuelConsumed, Is.EqualTo(first.FuelConsumed));
    }

    [Test]
    public void Random_IsSeededFromTheTask_SoADifferentInputDrawsDifferentBytes()
    {
        var spec = new TaskSpec { Module = Samples.Load("clockrand") };

        var a = Encoding.ASCII.GetString(_sandbox.Execute(spec, "one"u8.ToArray()).Stdout.Span);
        var b = Encoding.ASCII.GetString(_sandbox.Execute(spec, "two"u8.ToArray()).Stdout.Span);

        static string RandomLine(string s) => s.Split('\n').Single(l => l.StartsWith("random=", StringComparison.Ordinal));
        Assert.That(RandomLine(a), Has.Length.EqualTo("random=".Length + 32));
        Assert.That(RandomLine(a), Is.Not.EqualTo(RandomLine(b)));
    }

    [Test]
    public void Stdin_Args_Stderr_AndExitCode_ReachTheTask()
    {
        var spec = new TaskSpec { Module = Samples.TestModule("exitcode"), Args = ["7"] };

        var result = _sandbox.Execute(spec, "echo me"u8.ToArray());

        Assert.That(result.Outcome, Is.EqualTo(SandboxOutcome.ExitedNonZero));
        Assert.That(result.ExitCode, Is.EqualTo(7));
        Assert.That(Encoding.ASCII.GetString(result.Stdout.Span), Is.EqualTo("echo me"));
        Assert.That(Encoding.ASCII.GetString(result.Stderr.Span), Is.EqualTo("argc=2\n"));
        Assert.That(result.StderrTruncated, Is.False);
    }

    [Test]
    public void ProcExitZero_IsSuccess()
    {
        var result = _sandbox.Execute(new TaskSpec { Module = Samples.TestModule("exitcode"), Args = ["0"] }, default);

        Assert.That(result.Outcome, Is.EqualTo(SandboxOutcome.Success));
        Assert.That(result.ExitCode, Is.Zero);
    }

    [Test]
    public void Stderr_IsCappedWithoutEndingTheRun()
    {
        var sandbox = _fixture.Create(o => o with { MaxStderrBytes = 3 }, diskCache: false);

        var result = sandbox.Execute(new TaskSpec { Module = Samples.TestModule("exitcode"), Args = ["5"] }, default);

        Assert.That(result.Outcome, Is.EqualTo(SandboxOutcome.ExitedNonZero));
        Assert.That(result.ExitCode, Is.EqualTo(5));
        Assert.That(Encoding.ASCII.GetString(result.Stderr.Span), Is.EqualTo("arg"));
        Assert.That(result.StderrTruncated, Is.True);
    }

    [Test]
    public void FilesystemAndEnvironment_AreAbsent()
    {
        // A raw module: path_open on fd 3 (no preopens) must fail with EBADF (8), environ_sizes_get reports 0.
        var module = Wasmtime.Module.ConvertText("""
            (module
              (import "wasi_snapshot_preview1" "path_open"
                (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
              (import "wasi_snapshot_preview1" "environ_sizes_get" (func $env (param i32 i32) (result i32)))
              (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
              (memory (export "memory") 1)
              (data (i32.const 16) "/etc/passwd")
              (func (export "_start")
                (local $e i32)
                (local.set $e (call $open (i32.const 3) (i32.const 0) (i32.const 16) (i32.const 11)
                                          (i32.const 0) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 64)))
                (drop (call $env (i32.const 32) (i32.const 36)))
                ;; exit code = errno * 100 + environment count
                (call $exit (i32.add (i32.mul (local.get $e) (i32.const 100)) (i32.load (i32.const 32))))))
            """);

        var result = _sandbox.Execute(new TaskSpec { Module = module }, default);

        Assert.That(result.ExitCode, Is.EqualTo(800));
    }

    [Test]
    public void PollOneoffOnAClock_JumpsTheVirtualClockToTheDeadline()
    {
        // poll_oneoff with one relative 5 ms clock subscription, then clock_time_get:
        // exit code = nevents * 100000 + (time in µs).
        var module = Wasmtime.Module.ConvertText("""
            (module
              (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
              (import "wasi_snapshot_preview1" "clock_time_get" (func $time (param i32 i64 i32) (result i32)))
              (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
              (memory (export "memory") 1)
              (func (export "_start")
                (i64.store (i32.const 0) (i64.const 42))          ;; userdata
                (i32.store8 (i32.const 8) (i32.const 0))          ;; tag: clock
                (i32.store (i32.const 16) (i32.const 1))          ;; monotonic
                (i64.store (i32.const 24) (i64.const 5000000))    ;; 5 ms, relative
                (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))
                (drop (call $time (i32.const 1) (i64.const 0) (i32.const 136)))
                (call $exit (i32.add
                  (i32.mul (i32.load (i32.const 128)) (i32.const 100000))
                  (i32.wrap_i64 (i64.div_u (i64.load (i32.const 136)) (i64.const 1000)))))))
            """);

        var result = _sandbox.Execute(new TaskSpec { Module = module }, default);

        Assert.That(result.ExitCode, Is.EqualTo(105000));
    }
}
