using System.Buffers.Binary;
using Wasmtime;

namespace Potluck.Scheduler.Sandbox;

/// <summary>
/// Our own WASI preview 1 host (<see href="https://github.com/WebAssembly/WASI/blob/main/legacy/preview1/docs.md"/>),
/// defined on a <see cref="Linker"/> once per sandbox, reading each run's <see cref="WasiRunState"/>
/// from the store's data. Deviations from a full WASI host, all on purpose:
/// <list type="bullet">
/// <item>fd 0 is the task's input, fds 1 and 2 are capped in-memory buffers; there are no other
/// fds: no preopened directories, so every <c>path_*</c> and <c>sock_*</c> call fails with EBADF.</item>
/// <item>no environment variables.</item>
/// <item>every clock reads one virtual clock that starts at 0 and advances 1 µs per reading;
/// <c>poll_oneoff</c> on clocks jumps the virtual clock to the earliest deadline and never blocks.</item>
/// <item><c>random_get</c> returns a stream seeded from the task (see <see cref="WasiRunState.DeriveRandomSeed"/>).</item>
/// <item><c>proc_raise</c> fails with ENOSYS; <c>sched_yield</c> does nothing.</item>
/// </list>
/// </summary>
internal static class WasiPreview1
{
    public const string ModuleName = "wasi_snapshot_preview1";

    // errno values from the preview 1 witx.
    private const int Success = 0;
    private const int EBadF = 8;
    private const int EFault = 21;
    private const int EInval = 28;
    private const int ENoSys = 52;
    private const int ENotSup = 58;
    private const int ESPipe = 70;

    /// <summary>Fuel every host call costs before any bytes: about what a guest's call and return through the host take.</summary>
    public const ulong HostCallFuel = 50;

    /// <summary>Fuel per byte a host call copies into or out of guest memory (args, stdin, stdout, stderr).</summary>
    public const ulong CopyFuelPerByte = 1;

    /// <summary>
    /// Fuel per byte of <c>random_get</c>: each 32-byte block is a SHA-256, several hundred nanoseconds, so a byte costs
    /// about as much as a dozen guest instructions.
    /// </summary>
    public const ulong RandomFuelPerByte = 16;

    private const int SubscriptionSize = 48;
    private const int EventSize = 32;

    /// <summary>The functions defined, for validating a module's imports.</summary>
    public static IReadOnlySet<string> FunctionNames { get; } = new HashSet<string>(StringComparer.Ordinal)
    {
        "args_get", "args_sizes_get", "environ_get", "environ_sizes_get", "clock_res_get", "clock_time_get",
        "fd_advise", "fd_allocate", "fd_close", "fd_datasync", "fd_fdstat_get", "fd_fdstat_set_flags",
        "fd_fdstat_set_rights", "fd_filestat_get", "fd_filestat_set_size", "fd_filestat_set_times", "fd_pread",
        "fd_prestat_get", "fd_prestat_dir_name", "fd_pwrite", "fd_read", "fd_readdir", "fd_renumber", "fd_seek",
        "fd_sync", "fd_tell", "fd_write", "path_create_directory", "path_filestat_get", "path_filestat_set_times",
        "path_link", "path_open", "path_readlink", "path_remove_directory", "path_rename", "path_symlink",
        "path_unlink_file", "poll_oneoff", "proc_exit", "proc_raise", "sched_yield", "random_get",
        "sock_accept", "sock_recv", "sock_send", "sock_shutdown",
    };

    public static void Define(Linker linker)
    {
        const string M = ModuleName;
        linker.DefineFunction(M, "args_get", (Caller c, int argv, int buf) => ArgsGet(c, argv, buf));
        linker.DefineFunction(M, "args_sizes_get", (Caller c, int argc, int size) => ArgsSizesGet(c, argc, size));
        linker.DefineFunction(M, "environ_get", (Caller c, int env, int buf) => Success);
        linker.DefineFunction(M, "environ_sizes_get", (Caller c, int count, int size) => WriteTwoU32(c, count, 0, size, 0));
        linker.DefineFunction(M, "clock_res_get", (Caller c, int id, int ptr) => ClockResGet(c, id, ptr));
        linker.DefineFunction(M, "clock_time_get", (Caller c, int id, long precision, int ptr) => ClockTimeGet(c, id, ptr));
        linker.DefineFunction(M, "fd_advise", (Caller c, int fd, long off, long len, int advice) => Stdio(fd, ESPipe));
        linker.DefineFunction(M, "fd_allocate", (Caller c, int fd, long off, long len) => Stdio(fd, ESPipe));
        linker.DefineFunction(M, "fd_close", (Caller c, int fd) => Stdio(fd, Success));
        linker.DefineFunction(M, "fd_datasync", (Caller c, int fd) => Stdio(fd, EInval));
        linker.DefineFunction(M, "fd_fdstat_get", (Caller c, int fd, int ptr) => FdFdstatGet(c, fd, ptr));
        linker.DefineFunction(M, "fd_fdstat_set_flags", (Caller c, int fd, int flags) => Stdio(fd, ENotSup));
        linker.DefineFunction(M, "fd_fdstat_set_rights", (Caller c, int fd, long b, long i) => Stdio(fd, ENotSup));
        linker.DefineFunction(M, "fd_filestat_get", (Caller c, int fd, int ptr) => FdFilestatGet(c, fd, ptr));
        linker.DefineFunction(M, "fd_filestat_set_size", (Caller c, int fd, long size) => Stdio(fd, EInval));
        linker.DefineFunction(M, "fd_filestat_set_times", (Caller c, int fd, long a, long m, int f) => Stdio(fd, ENotSup));
        linker.DefineFunction(M, "fd_pread", (Caller c, int fd, int iovs, int n, long off, int ptr) => Stdio(fd, ESPipe));
        linker.DefineFunction(M, "fd_prestat_get", (Caller c, int fd, int ptr) => EBadF);
        linker.DefineFunction(M, "fd_prestat_dir_name", (Caller c, int fd, int path, int len) => EBadF);
        linker.DefineFunction(M, "fd_pwrite", (Caller c, int fd, int iovs, int n, long off, int ptr) => Stdio(fd, ESPipe));
        linker.DefineFunction(M, "fd_read", (Caller c, int fd, int iovs, int n, int ptr) => FdRead(c, fd, iovs, n, ptr));
        linker.DefineFunction(M, "fd_readdir", (Caller c, int fd, int buf, int len, long cookie, int ptr) => Stdio(fd, ENotSup));
        linker.DefineFunction(M, "fd_renumber", (Caller c, int fd, int to) => Stdio(fd, ENotSup));
        linker.DefineFunction(M, "fd_seek", (Caller c, int fd, long off, int whence, int ptr) => Stdio(fd, ESPipe));
        linker.DefineFunction(M, "fd_sync", (Caller c, int fd) => Stdio(fd, EInval));
        linker.DefineFunction(M, "fd_tell", (Caller c, int fd, int ptr) => Stdio(fd, ESPipe));
        linker.DefineFunction(M, "fd_write", (Caller c, int fd, int iovs, int n, int ptr) => FdWrite(c, fd, iovs, n, ptr));
        linker.DefineFunction(M, "path_create_directory", (Caller c, int fd, int p, int l) => EBadF);
        linker.DefineFunction(M, "path_filestat_get", (Caller c, int fd, int fl, int p, int l, int b) => EBadF);
        linker.DefineFunction(M, "path_filestat_set_times", (Caller c, int fd, int fl, int p, int l, long a, long m, int f) => EBadF);
        linker.DefineFunction(M, "path_link", (Caller c, int fd, int fl, int p, int l, int fd2, int p2, int l2) => EBadF);
        linker.DefineFunction(M, "path_open", (Caller c, int fd, int df, int p, int l, int of, long rb, long ri, int ff, int ptr) => EBadF);
        linker.DefineFunction(M, "path_readlink", (Caller c, int fd, int p, int l, int b, int bl, int ptr) => EBadF);
        linker.DefineFunction(M, "path_remove_directory", (Caller c, int fd, int p, int l) => EBadF);
        linker.DefineFunction(M, "path_rename", (Caller c, int fd, int p, int l, int fd2, int p2, int l2) => EBadF);
        linker.DefineFunction(M, "path_symlink", (Caller c, int p, int l, int fd, int p2, int l2) => EBadF);
        linker.DefineFunction(M, "path_unlink_file", (Caller c, int fd, int p, int l) => EBadF);
        linker.DefineFunction(M, "poll_oneoff", (Caller c, int subs, int events, int n, int ptr) => PollOneoff(c, subs, events, n, ptr));
        linker.DefineFunction(M, "proc_exit", (Caller c, int code) => { ProcExit(c, code); });
        linker.DefineFunction(M, "proc_raise", (Caller c, int sig) => ENoSys);
        linker.DefineFunction(M, "sched_yield", (Caller c) => Success);
        linker.DefineFunction(M, "random_get", (Caller c, int buf, int len) => RandomGet(c, buf, len));
        linker.DefineFunction(M, "sock_accept", (Caller c, int fd, int flags, int ptr) => EBadF);
        linker.DefineFunction(M, "sock_recv", (Caller c, int fd, int d, int dl, int fl, int p1, int p2) => EBadF);
        linker.DefineFunction(M, "sock_send", (Caller c, int fd, int d, int dl, int fl, int p) => EBadF);
        linker.DefineFunction(M, "sock_shutdown", (Caller c, int fd, int how) => EBadF);
    }

    private static WasiRunState State(Caller caller) => (WasiRunState)caller.GetData()!;

    /// <summary>
    /// Charges <see cref="HostCallFuel"/> plus <paramref name="bytes"/> × <paramref name="perByte"/> from the store's fuel
    /// before the call does its work, so fuel bounds the CPU a task can buy through the host as it does for guest code.
    /// With too little fuel left the run ends as out of fuel (deterministic: the same task stops at the same call).
    /// </summary>
    private static void Charge(Caller caller, ulong bytes, ulong perByte)
    {
        var cost = bytes > (ulong.MaxValue - HostCallFuel) / Math.Max(1, perByte) ? ulong.MaxValue : HostCallFuel + bytes * perByte;
        if (State(caller).Fence is { } fence)
        {
            // Part of the fuel is held outside the store (FuelFence): the fence charges against the whole, and sets the store.
            // A store write also empties the store's reserve (an armed fence): only when the fuel held back cannot pay. False: out
            // of fuel, or the fuel used not known (FuelFence.Lost; the sandbox runs the task again): stop either way.
            var enough = fence.TryCharge(caller.Fuel, cost, out var set);
            if (set is { } fuel)
            {
                caller.Fuel = fuel;
            }
            if (!enough)
            {
                State(caller).Stop = HostStop.OutOfFuel;
                throw new SandboxStopException(HostStop.OutOfFuel);
            }
            return;
        }
        var left = caller.Fuel;
        if (cost > left)
        {
            caller.Fuel = 0;
            State(caller).Stop = HostStop.OutOfFuel;
            throw new SandboxStopException(HostStop.OutOfFuel);
        }
        caller.Fuel = left - cost;
    }

    /// <summary>fds 0–2 get <paramref name="stdioErrno"/>; every other fd does not exist.</summary>
    private static int Stdio(int fd, int stdioErrno) => fd is >= 0 and <= 2 ? stdioErrno : EBadF;

    /// <summary>A checked view of guest memory; false when [ptr, ptr+len) is out of bounds.</summary>
    private static bool TrySpan(Memory? memory, int ptr, long len, out Span<byte> span)
    {
        span = default;
        if (memory is null || len < 0 || len > int.MaxValue) return false;
        var start = (ulong)(uint)ptr;
        if (start + (ulong)len > (ulong)memory.GetLength()) return false;
        span = memory.GetSpan((long)start, (int)len);
        return true;
    }

    private static Memory? GuestMemory(Caller caller) => caller.GetMemory("memory");

    private static int WriteTwoU32(Caller caller, int ptrA, uint a, int ptrB, uint b)
    {
        var memory = GuestMemory(caller);
        if (!TrySpan(memory, ptrA, 4, out var sa)) return EFault;
        BinaryPrimitives.WriteUInt32LittleEndian(sa, a);
        if (!TrySpan(memory, ptrB, 4, out var sb)) return EFault;
        BinaryPrimitives.WriteUInt32LittleEndian(sb, b);
        return Success;
    }

    private static int ArgsSizesGet(Caller caller, int argcPtr, int sizePtr)
    {
        var argv = State(caller).Argv;
        long size = 0;
        foreach (var a in argv) size += a.Length;
        return WriteTwoU32(caller, argcPtr, (uint)argv.Length, sizePtr, (uint)size);
    }

    private static int ArgsGet(Caller caller, int argvPtr, int bufPtr)
    {
        var argv = State(caller).Argv;
        var memory = GuestMemory(caller);
        long size = 0;
        foreach (var a in argv) size += a.Length;
        if (!TrySpan(memory, argvPtr, 4L * argv.Length, out var pointers)) return EFault;
        if (!TrySpan(memory, bufPtr, size, out var buf)) return EFault;
        Charge(caller, (ulong)size, CopyFuelPerByte);
        var offset = 0;
        for (var i = 0; i < argv.Length; i++)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(pointers[(4 * i)..], (uint)bufPtr + (uint)offset);
            argv[i].CopyTo(buf[offset..]);
            offset += argv[i].Length;
        }
        return Success;
    }

    private static int ClockResGet(Caller caller, int id, int ptr)
    {
        if (id is < 0 or > 3) return EInval;
        if (!TrySpan(GuestMemory(caller), ptr, 8, out var s)) return EFault;
        BinaryPrimitives.WriteUInt64LittleEndian(s, WasiRunState.ClockStepNs);
        return Success;
    }

    private static int ClockTimeGet(Caller caller, int id, int ptr)
    {
        if (id is < 0 or > 3) return EInval;
        if (!TrySpan(GuestMemory(caller), ptr, 8, out var s)) return EFault;
        BinaryPrimitives.WriteUInt64LittleEndian(s, State(caller).ReadClock());
        return Success;
    }

    private static int FdFdstatGet(Caller caller, int fd, int ptr)
    {
        if (fd is < 0 or > 2) return EBadF;
        if (!TrySpan(GuestMemory(caller), ptr, 24, out var s)) return EFault;
        s.Clear();
        // filetype unknown (0): not a tty, so stdio is fully buffered (fewer host calls).
        const ulong fdRead = 1UL << 1, fdWrite = 1UL << 6, pollReadWrite = 1UL << 27;
        BinaryPrimitives.WriteUInt64LittleEndian(s[8..], (fd == 0 ? fdRead : fdWrite) | pollReadWrite);
        return Success;
    }

    private static int FdFilestatGet(Caller caller, int fd, int ptr)
    {
        if (fd is < 0 or > 2) return EBadF;
        if (!TrySpan(GuestMemory(caller), ptr, 64, out var s)) return EFault;
        s.Clear();
        return Success;
    }

    /// <summary>Validates an iovec array; the caller then walks it.</summary>
    private static bool TryIovecs(Memory? memory, int iovs, int count, out Span<byte> table)
        => TrySpan(memory, iovs, 8L * (uint)count, out table);

    private static int FdRead(Caller caller, int fd, int iovs, int count, int nreadPtr)
    {
        if (fd != 0) return Stdio(fd, EBadF);
        var state = State(caller);
        var memory = GuestMemory(caller);
        if (!TryIovecs(memory, iovs, count, out _)) return EFault;
        if (!TrySpan(memory, nreadPtr, 4, out _)) return EFault;
        Charge(caller, (ulong)Math.Max(0, state.StdinRemaining), CopyFuelPerByte);
        uint total = 0;
        for (var i = 0; i < count && state.StdinRemaining > 0; i++)
        {
            TrySpan(memory, iovs, 8L * (uint)count, out var table);
            var ptr = (int)BinaryPrimitives.ReadUInt32LittleEndian(table[(8 * i)..]);
            var len = BinaryPrimitives.ReadUInt32LittleEndian(table[(8 * i + 4)..]);
            if (!TrySpan(memory, ptr, len, out var dest)) return EFault;
            total += (uint)state.ReadStdin(dest);
        }
        TrySpan(memory, nreadPtr, 4, out var nread);
        BinaryPrimitives.WriteUInt32LittleEndian(nread, total);
        return Success;
    }

    private static int FdWrite(Caller caller, int fd, int iovs, int count, int nwrittenPtr)
    {
        if (fd is not (1 or 2)) return EBadF;
        var state = State(caller);
        var memory = GuestMemory(caller);
        if (!TryIovecs(memory, iovs, count, out var table)) return EFault;
        if (!TrySpan(memory, nwrittenPtr, 4, out _)) return EFault;
        // Check every buffer before writing any, so a fault writes nothing.
        ulong requested = 0;
        for (var i = 0; i < count; i++)
        {
            var ptr = (int)BinaryPrimitives.ReadUInt32LittleEndian(table[(8 * i)..]);
            var len = BinaryPrimitives.ReadUInt32LittleEndian(table[(8 * i + 4)..]);
            if (!TrySpan(memory, ptr, len, out _)) return EFault;
            requested += len;
        }
        Charge(caller, requested, CopyFuelPerByte);
        ulong total = 0;
        for (var i = 0; i < count; i++)
        {
            var ptr = (int)BinaryPrimitives.ReadUInt32LittleEndian(table[(8 * i)..]);
            var len = BinaryPrimitives.ReadUInt32LittleEndian(table[(8 * i + 4)..]);
            TrySpan(memory, ptr, len, out var data);
            if (fd == 2)
            {
                state.WriteStderr(data);
            }
            else if (!state.WriteStdout(data))
            {
                state.Stop = HostStop.OutputLimit;
                throw new SandboxStopException(HostStop.OutputLimit);
            }
            total += len;
        }
        TrySpan(memory, nwrittenPtr, 4, out var nwritten);
        BinaryPrimitives.WriteUInt32LittleEndian(nwritten, (uint)Math.Min(total, uint.MaxValue));
        return Success;
    }

    private static int PollOneoff(Caller caller, int subsPtr, int eventsPtr, int count, int neventsPtr)
    {
        if (count <= 0) return EInval;
        var state = State(caller);
        var memory = GuestMemory(caller);
        if (!TrySpan(memory, subsPtr, (long)SubscriptionSize * count, out _)) return EFault;
        if (!TrySpan(memory, eventsPtr, (long)EventSize * count, out _)) return EFault;
        if (!TrySpan(memory, neventsPtr, 4, out _)) return EFault;

        // fd subscriptions are always ready; time passes only when nothing else is: then the
        // virtual clock jumps to the earliest clock deadline and every clock due by then fires.
        var anyFd = false;
        var deadlines = new ulong[count];
        var earliest = ulong.MaxValue;
        for (var i = 0; i < count; i++)
        {
            TrySpan(memory, subsPtr, (long)SubscriptionSize * count, out var subs);
            var sub = subs.Slice(i * SubscriptionSize, SubscriptionSize);
            deadlines[i] = ulong.MaxValue;
            if (sub[8] != 0)
            {
                anyFd |= sub[8] is 1 or 2;
                continue;
            }
            if (BinaryPrimitives.ReadUInt32LittleEndian(sub[16..]) > 3) continue;
            var timeout = BinaryPrimitives.ReadUInt64LittleEndian(sub[24..]);
            var absolute = (BinaryPrimitives.ReadUInt16LittleEndian(sub[40..]) & 1) != 0;
            deadlines[i] = absolute ? timeout : SaturatingAdd(state.VirtualTimeNs, timeout);
            earliest = Math.Min(earliest, deadlines[i]);
        }
        if (!anyFd && earliest != ulong.MaxValue && earliest > state.VirtualTimeNs)
        {
            state.VirtualTimeNs = earliest;
        }

        var written = 0;
        for (var i = 0; i < count; i++)
        {
            TrySpan(memory, subsPtr, (long)SubscriptionSize * count, out var subs);
            var sub = subs.Slice(i * SubscriptionSize, SubscriptionSize);
            var tag = sub[8];
            ushort error = Success;
            ulong nbytes = 0;
            ushort flags = 0;
            if (tag == 0)
            {
                if (BinaryPrimitives.ReadUInt32LittleEndian(sub[16..]) > 3)
                {
                    error = EInval;
                }
                else if (anyFd || deadlines[i] > state.VirtualTimeNs)
                {
                    continue;
                }
            }
            else if (tag is 1 or 2)
            {
                var fd = BinaryPrimitives.ReadUInt32LittleEndian(sub[16..]);
                if (tag == 1 && fd == 0)
                {
                    nbytes = (ulong)state.StdinRemaining;
                    flags = nbytes == 0 ? (ushort)1 : (ushort)0; // fd_readwrite_hangup at end of input
                }
                else if (tag == 2 && fd is 1 or 2)
                {
                    nbytes = 0;
                }
                else
                {
                    error = EBadF;
                }
            }
            else
            {
                error = EInval;
            }
            TrySpan(memory, eventsPtr, (long)EventSize * count, out var events);
            var ev = events.Slice(written * EventSize, EventSize);
            ev.Clear();
            sub[..8].CopyTo(ev); // userdata
            BinaryPrimitives.WriteUInt16LittleEndian(ev[8..], error);
            ev[10] = tag;
            BinaryPrimitives.WriteUInt64LittleEndian(ev[16..], nbytes);
            BinaryPrimitives.WriteUInt16LittleEndian(ev[24..], flags);
            written++;
        }
        TrySpan(memory, neventsPtr, 4, out var nevents);
        BinaryPrimitives.WriteUInt32LittleEndian(nevents, (uint)written);
        return Success;
    }

    private static ulong SaturatingAdd(ulong a, ulong b) => a > ulong.MaxValue - b ? ulong.MaxValue : a + b;

    private static void ProcExit(Caller caller, int code)
    {
        var state = State(caller);
        state.ExitCode = code;
        state.Stop = HostStop.Exit;
        throw new SandboxStopException(HostStop.Exit);
    }

    private static int RandomGet(Caller caller, int buf, int len)
    {
        if (!TrySpan(GuestMemory(caller), buf, (uint)len, out var dest)) return EFault;
        Charge(caller, (uint)len, RandomFuelPerByte);
        State(caller).FillRandom(dest);
        return Success;
    }
}
