using FsCheckProperty = FsCheck.NUnit.PropertyAttribute;
using Microsoft.Extensions.Logging.Abstractions;
using Potluck.Scheduler.Sandbox;

namespace Potluck.Scheduler.Tests.Sandbox;

public class PropertyTests
{
    private static readonly Lazy<WasmSandbox> Shared = new(() => new WasmSandbox(
        new SandboxOptions { DefaultFuel = 1_000_000, MaxMemoryBytes = 4L * 1024 * 1024, MaxStdoutBytes = 4096, DefaultDeadline = TimeSpan.FromSeconds(10) },
        NullLogger<WasmSandbox>.Instance));

    /// <summary>A small WASI command that reads stdin, writes it back and exits with its length.</summary>
    private static readonly byte[] Echo = Wasmtime.Module.ConvertText("""
        (module
          (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
          (memory (export "memory") 1)
          (func (export "_start")
            (i32.store (i32.const 0) (i32.const 64))
            (i32.store (i32.const 4) (i32.const 256))
            (drop (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
            (i32.store (i32.const 4) (i32.load (i32.const 8)))
            (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 12)))
            (call $exit (i32.load (i32.const 8)))))
        """);

    [OneTimeTearDown]
    public void TearDown()
    {
        if (Shared.IsValueCreated) Shared.Value.Dispose();
    }

    [FsCheckProperty(MaxTest = 200)]
    public bool AnyBytes_AreRefusedAsInvalidModule_NeverThrow(byte[] bytes)
    {
        var result = Shared.Value.Execute(new TaskSpec { Module = bytes }, default);
        return result.Outcome == SandboxOutcome.InvalidModule && result.FuelConsumed == 0;
    }

    [FsCheckProperty(MaxTest = 1000)]
    public bool MutatedModule_EndsInSomeOutcome_AndTheSameOneTwice(int position, byte value, byte[] input)
    {
        var bytes = (byte[])Echo.Clone();
        bytes[(int)((uint)position % (uint)bytes.Length)] = value;

        var first = Shared.Value.Execute(new TaskSpec { Module = bytes }, input ?? []);
        var second = Shared.Value.Execute(new TaskSpec { Module = bytes }, input ?? []);

        return Enum.IsDefined(first.Outcome)
            && first.Outcome == second.Outcome
            && first.FuelConsumed == second.FuelConsumed
            && first.Stdout.Span.SequenceEqual(second.Stdout.Span);
    }

    [FsCheckProperty(MaxTest = 100)]
    public bool Echo_ReturnsStdinAndItsLength(byte[] input)
    {
        input ??= [];
        var result = Shared.Value.Execute(new TaskSpec { Module = Echo }, input);
        var echoed = Math.Min(input.Length, 256);
        return result.ExitCode == echoed && result.Stdout.Span.SequenceEqual(input.AsSpan(0, echoed));
    }
}
