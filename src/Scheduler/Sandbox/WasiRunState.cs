using System.Buffers;
using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;

namespace Potluck.Scheduler.Sandbox;

/// <summary>Why the host stopped a run from inside a host call or the epoch callback.</summary>
internal enum HostStop
{
    None,
    Exit,
    OutputLimit,
    Deadline,
    Cancelled,
    OutOfFuel,
}

/// <summary>Thrown from host code to unwind the guest; the run's state says why.</summary>
internal sealed class SandboxStopException(HostStop reason) : Exception(reason.ToString())
{
    public HostStop Reason { get; } = reason;
}

/// <summary>
/// Everything one run's WASI calls see: stdin, the output buffers and their caps, argv, the
/// virtual clock and the seeded random stream. Lives in the store's data; one per run.
/// </summary>
internal sealed class WasiRunState
{
    /// <summary>Each clock reading advances the virtual clock by this much (1 µs), so loops that
    /// wait for time to pass still end, and every run sees the same sequence.</summary>
    public const ulong ClockStepNs = 1_000;

    private readonly ReadOnlyMemory<byte> _stdin;
    private int _stdinPos;
    private readonly ArrayBufferWriter<byte> _stdout = new();
    private readonly ArrayBufferWriter<byte> _stderr = new();
    private readonly int _maxStdout;
    private readonly int _maxStderr;
    private Func<byte[]>? _deriveSeed;
    private byte[]? _randomSeed;
    private ulong _randomCounter;
    private readonly byte[] _randomBlock = new byte[32];
    private int _randomBlockUsed = 32;

    public WasiRunState(ReadOnlyMemory<byte> stdin, byte[][] argv, int maxStdout, int maxStderr, byte[] randomSeed)
        : this(stdin, argv, maxStdout, maxStderr, () => randomSeed)
    {
    }

    /// <param name="deriveSeed">Called once, on the first <see cref="FillRandom"/>: most tasks never ask for
    /// random bytes, so they need not pay for hashing their stdin into a seed.</param>
    public WasiRunState(ReadOnlyMemory<byte> stdin, byte[][] argv, int maxStdout, int maxStderr, Func<byte[]> deriveSeed)
    {
        _stdin = stdin;
        Argv = argv;
        _maxStdout = maxStdout;
        _maxStderr = maxStderr;
        _deriveSeed = deriveSeed;
    }

    /// <summary>argv, each entry UTF-8 with its terminating NUL.</summary>
    public byte[][] Argv { get; }

    public HostStop Stop { get; set; }

    /// <summary>The run's fuel fences (debit notes on a call-free loop), whose fuel host calls charge through; null: none.</summary>
    public FuelFence? Fence { get; set; }

    public int ExitCode { get; set; }

    public bool StderrTruncated { get; private set; }

    /// <summary>Virtual nanoseconds since the run began; all clocks read it.</summary>
    public ulong VirtualTimeNs { get; set; }

    public ReadOnlySpan<byte> Stdout => _stdout.WrittenSpan;

    public ReadOnlySpan<byte> Stderr => _stderr.WrittenSpan;

    public int StdinRemaining => _stdin.Length - _stdinPos;

    public int ReadStdin(Span<byte> into)
    {
        var n = Math.Min(into.Length, StdinRemaining);
        _stdin.Span.Slice(_stdinPos, n).CopyTo(into);
        _stdinPos += n;
        return n;
    }

    /// <summary>Appends to stdout; false (after keeping what fits) when the cap is passed.</summary>
    public bool WriteStdout(ReadOnlySpan<byte> data)
    {
        var room = _maxStdout - _stdout.WrittenCount;
        if (data.Length > room)
        {
            _stdout.Write(data[..room]);
            return false;
        }
        _stdout.Write(data);
        return true;
    }

    /// <summary>Appends to stderr, dropping what passes the cap.</summary>
    public void WriteStderr(ReadOnlySpan<byte> data)
    {
        var room = _maxStderr - _stderr.WrittenCount;
        if (data.Length > room)
        {
            StderrTruncated = true;
            data = data[..room];
        }
        _stderr.Write(data);
    }

    /// <summary>Reads the virtual clock, then advances it by <see cref="ClockStepNs"/>.</summary>
    public ulong ReadClock()
    {
        var now = VirtualTimeNs;
        VirtualTimeNs += ClockStepNs;
        return now;
    }

    /// <summary>Fills <paramref name="into"/> from SHA-256(seed ‖ counter) blocks: the same seed gives the same stream.</summary>
    public void FillRandom(Span<byte> into)
    {
        Span<byte> input = stackalloc byte[40];
        if (_randomSeed is null)
        {
            _randomSeed = _deriveSeed!();
            _deriveSeed = null;
        }
        while (!into.IsEmpty)
        {
            if (_randomBlockUsed == _randomBlock.Length)
            {
                _randomSeed.CopyTo(input);
                BinaryPrimitives.WriteUInt64LittleEndian(input[32..], _randomCounter++);
                SHA256.HashData(input, _randomBlock);
                _randomBlockUsed = 0;
            }
            var n = Math.Min(into.Length, _randomBlock.Length - _randomBlockUsed);
            _randomBlock.AsSpan(_randomBlockUsed, n).CopyTo(into);
            _randomBlockUsed += n;
            into = into[n..];
        }
    }

    /// <summary>The random seed of a task: SHA-256 over a domain tag, the module hash, the
    /// arguments and the SHA-256 of stdin. The same task always draws the same numbers.</summary>
    public static byte[] DeriveRandomSeed(ReadOnlySpan<byte> moduleSha256, IReadOnlyList<string> args, ReadOnlySpan<byte> stdin)
    {
        using var h = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        h.AppendData("potluck/sandbox/random/v1\0"u8);
        h.AppendData(moduleSha256);
        Span<byte> len = stackalloc byte[4];
        BinaryPrimitives.WriteInt32LittleEndian(len, args.Count);
        h.AppendData(len);
        foreach (var a in args)
        {
            var bytes = Encoding.UTF8.GetBytes(a);
            BinaryPrimitives.WriteInt32LittleEndian(len, bytes.Length);
            h.AppendData(len);
            h.AppendData(bytes);
        }
        h.AppendData(SHA256.HashData(stdin));
        return h.GetHashAndReset();
    }
}
