using System.IO.Pipelines;
using System.Runtime.ExceptionServices;
using System.Threading.Tasks.Sources;
using Potluck.Protocol.Muxing;

namespace Potluck.Protocol.Framing;

/// <summary>
/// <see cref="LengthPrefixed.TryReadAsync"/> for one long-lived stream read message after message (gossipsub's inbound
/// stream, read for its connection's life): the reader is its own <see cref="IValueTaskSource{TResult}"/> and parks on
/// the stream's input with itself as the state, so a handler parked between messages holds its own state machine and
/// this object, not a second async method's state machine, its continuation object and its delegate. The continuation
/// runs where an <c>await</c> of that second method would have resumed: inline when the read completes on the context
/// the handler awaited on (the event loop in a simulation), else posted there; in no captured context at once (a
/// real node's thread pool). Same bytes, same limits, same failures as <see cref="LengthPrefixed.TryReadAsync"/>; one
/// read at a time, no token (the stream's end ends it).
/// </summary>
internal sealed class ParkedFrameReader : IValueTaskSource<FramedRead>
{
    private static readonly Action<object?> Completed = static _ => { };
    private static readonly Action<object?> OnReadable = static s => ((ParkedFrameReader)s!).Continue();

    private readonly PipeReader _reader;
    private readonly IParkingReader _parking;
    private readonly int _maxLength;
    private readonly string _protocol;
    private byte[]? _message;
    private int _filled;

    private Action<object?>? _continuation; // the awaiter's, or Completed when the read completed first
    private object? _state;
    private object? _context; // the SynchronizationContext or TaskScheduler the awaiter asked to resume on
    private ExecutionContext? _execution;
    private FramedRead _result;
    private ExceptionDispatchInfo? _error;
    private short _version;
    private volatile bool _done;

    private ParkedFrameReader(PipeReader reader, IParkingReader parking, int maxLength, string protocol)
    {
        _reader = reader;
        _parking = parking;
        _maxLength = maxLength;
        _protocol = protocol;
    }

    /// <summary>A frame reader for <paramref name="reader"/> when it can park one (a yamux stream's input); null otherwise.</summary>
    public static ParkedFrameReader? For(PipeReader reader, int maxLength, string protocol) =>
        reader is IParkingReader parking and IFailureAsValueReader ? new ParkedFrameReader(reader, parking, maxLength, protocol) : null;

    /// <summary>The next message, the clean end or the failure, as <see cref="LengthPrefixed.TryReadAsync"/> gives them.</summary>
    public ValueTask<FramedRead> ReadAsync()
    {
        while (true)
        {
            if (!_parking.ReadOrPark(out var result, OnReadable, this))
            {
                _done = false;
                _continuation = null;
                return new ValueTask<FramedRead>(this, ++_version);
            }
            if (LengthPrefixed.TryTake(_reader, Failing, result, _maxLength, _protocol, ref _message, ref _filled, out var read))
            {
                return new ValueTask<FramedRead>(read);
            }
        }
    }

    private IFailureAsValueReader Failing => (IFailureAsValueReader)_parking;

    /// <summary>The parked read is ready (on the input's scheduler): take it, read on, and complete the wait when done.</summary>
    private void Continue()
    {
        try
        {
            var result = _parking.TakeParked();
            while (!LengthPrefixed.TryTake(_reader, Failing, result, _maxLength, _protocol, ref _message, ref _filled, out _result))
            {
                if (!_parking.ReadOrPark(out result, OnReadable, this))
                {
                    return; // parked again: the same wait still pending
                }
            }
        }
        catch (Exception e)
        {
            _error = ExceptionDispatchInfo.Capture(e);
        }
        _done = true;
        var continuation = Interlocked.CompareExchange(ref _continuation, Completed, null);
        if (continuation is not null)
        {
            Resume(continuation, _state, inline: true);
        }
    }

    /// <summary>Runs the awaiter's continuation where its await asked (see the class's remarks).</summary>
    private void Resume(Action<object?> continuation, object? state, bool inline)
    {
        var execution = _execution;
        _execution = null;
        switch (_context)
        {
            case SynchronizationContext context when inline && SynchronizationContext.Current == context:
                Run(continuation, state, execution);
                break;
            case SynchronizationContext context:
                context.Post(static s => Run(((Action<object?>, object?, ExecutionContext?))s!), (continuation, state, execution));
                break;
            case TaskScheduler scheduler:
                Task.Factory.StartNew(static s => Run(((Action<object?>, object?, ExecutionContext?))s!), (continuation, state, execution),
                    CancellationToken.None, TaskCreationOptions.DenyChildAttach, scheduler);
                break;
            default:
                if (inline)
                {
                    Run(continuation, state, execution);
                }
                else
                {
                    ThreadPool.UnsafeQueueUserWorkItem(static s => Run(s), (continuation, state, execution), preferLocal: true);
                }
                break;
        }
    }

    private static void Run((Action<object?> Continuation, object? State, ExecutionContext? Execution) resume) =>
        Run(resume.Continuation, resume.State, resume.Execution);

    private static void Run(Action<object?> continuation, object? state, ExecutionContext? execution)
    {
        if (execution is null)
        {
            continuation(state);
            return;
        }
        ExecutionContext.Run(execution, static s =>
        {
            var (run, st) = ((Action<object?>, object?))s!;
            run(st);
        }, (continuation, state));
    }

    ValueTaskSourceStatus IValueTaskSource<FramedRead>.GetStatus(short token)
    {
        ThrowIfNotCurrent(token);
        return !_done ? ValueTaskSourceStatus.Pending : _error is null ? ValueTaskSourceStatus.Succeeded : ValueTaskSourceStatus.Faulted;
    }

    void IValueTaskSource<FramedRead>.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags)
    {
        ThrowIfNotCurrent(token);
        _context = null;
        if ((flags & ValueTaskSourceOnCompletedFlags.UseSchedulingContext) != 0)
        {
            var context = SynchronizationContext.Current;
            if (context is not null && context.GetType() != typeof(SynchronizationContext))
            {
                _context = context;
            }
            else if (TaskScheduler.Current is { } scheduler && scheduler != TaskScheduler.Default)
            {
                _context = scheduler;
            }
        }
        _execution = (flags & ValueTaskSourceOnCompletedFlags.FlowExecutionContext) != 0 ? ExecutionContext.Capture() : null;
        _state = state;
        if (Interlocked.CompareExchange(ref _continuation, continuation, null) is not null)
        {
            Resume(continuation, state, inline: false); // completed before the awaiter got here
        }
    }

    FramedRead IValueTaskSource<FramedRead>.GetResult(short token)
    {
        ThrowIfNotCurrent(token);
        if (!_done)
        {
            throw new InvalidOperationException("this frame read is not complete");
        }
        _continuation = null;
        _state = null;
        _context = null;
        var error = _error;
        var result = _result;
        _error = null;
        _result = default;
        _version++; // taken: this token is over
        error?.Throw();
        return result;
    }

    private void ThrowIfNotCurrent(short token)
    {
        if (token != _version)
        {
            throw new InvalidOperationException("this frame read is over");
        }
    }
}
