using Microsoft.Extensions.Logging;

namespace Potluck.Protocol.Runtime;

/// <summary>
/// The owner of one component's background work (accept loops, per-stream handlers, timers' follow-ups, fire-and-forget
/// sends): each piece is started on the node's <see cref="TaskScheduler"/> (the thread pool in a real node, the
/// simulation's event loop under virtual time), kept until it ends, and its failure classified and logged once
/// (cancellation quiet, a remote's fault at Debug, our bug at Error). <see cref="StopAsync"/> cancels
/// <see cref="Stopping"/> and waits for everything still running. Nothing is left as a bare <c>_ = SomethingAsync()</c>.
/// </summary>
public sealed partial class BackgroundWork : IAsyncDisposable
{
    private readonly string _owner;
    private readonly ILogger _log;
    private readonly TaskScheduler _scheduler;
    private readonly CancellationTokenSource _stopping = new();
    private readonly CancellationToken _stoppingToken; // kept: a disposed source's Token throws, a family member's may be compared after
    private readonly Lock _gate = new();
    private readonly Family? _family;
    private int _running;
    private TaskCompletionSource? _idle;
    private int _stopped;

    /// <param name="owner">The component, for log lines (e.g. "host", "gossipsub").</param>
    /// <param name="log">Where failures are logged.</param>
    /// <param name="scheduler">Where work starts; <see cref="TaskScheduler.Default"/> when null.</param>
    /// <param name="family">The other owners of the same runtime, whose stop tokens <see cref="Link"/> recognises.</param>
    public BackgroundWork(string owner, ILogger log, TaskScheduler? scheduler = null, Family? family = null)
    {
        _owner = owner;
        _log = log;
        _scheduler = scheduler ?? TaskScheduler.Default;
        _stoppingToken = _stopping.Token;
        _family = family;
        family?.Add(this);
    }

    /// <summary>The owners of background work of one runtime (one node): a handful, one per component.</summary>
    public sealed class Family
    {
        private BackgroundWork[] _members = [];
        private readonly Lock _gate = new();

        internal BackgroundWork[] Members => Volatile.Read(ref _members);

        internal void Add(BackgroundWork work)
        {
            lock (_gate)
            {
                Volatile.Write(ref _members, [.. _members, work]);
            }
        }

        /// <summary>A disposed owner leaves (a component stopped and built again does not grow the family).</summary>
        internal void Remove(BackgroundWork work)
        {
            lock (_gate)
            {
                if (Array.IndexOf(_members, work) >= 0)
                {
                    Volatile.Write(ref _members, _members.Where(m => !ReferenceEquals(m, work)).ToArray());
                }
            }
        }
    }

    /// <summary>Cancelled when the owner stops.</summary>
    public CancellationToken Stopping => _stopping.Token;

    /// <summary>Pieces of work still running.</summary>
    public int Running
    {
        get
        {
            lock (_gate)
            {
                return _running;
            }
        }
    }

    /// <summary>Whether <see cref="StopAsync"/> has begun.</summary>
    public bool IsStopping => Volatile.Read(ref _stopped) != 0;

    /// <summary>Starts <paramref name="work"/> with the owner's stop token, fire-and-forget: its failure is logged, never lost.</summary>
    public void Run(string name, Func<CancellationToken, Task> work)
    {
        ArgumentNullException.ThrowIfNull(work);
        Begin(name, static (token, w) => ((Func<CancellationToken, Task>)w!)(token), work, done: null);
    }

    /// <summary>Starts <paramref name="work"/>, which takes no token (it ends by itself, or when what it awaits is closed).</summary>
    public void Run(string name, Func<Task> work)
    {
        ArgumentNullException.ThrowIfNull(work);
        Begin(name, static (_, w) => ((Func<Task>)w!)(), work, done: null);
    }

    /// <summary>
    /// As <see cref="Run(string, Func{CancellationToken, Task})"/>, and returns a task that ends as the work did, once its
    /// failure (if any) has been logged (already observed: awaiting it is optional).
    /// </summary>
    public Task Start(string name, Func<CancellationToken, Task> work)
    {
        ArgumentNullException.ThrowIfNull(work);
        var done = new TaskCompletionSource();
        return Begin(name, static (token, w) => ((Func<CancellationToken, Task>)w!)(token), work, done) ? done.Task : Task.CompletedTask;
    }

    private bool Begin(string name, Func<CancellationToken, object?, Task> work, object? state, TaskCompletionSource? done)
    {
        if (IsStopping)
        {
            return false;
        }
        Enter();
        new Piece(this, name, work, state, done).Queue(_scheduler);
        return true;
    }

    /// <summary>Keeps an already started task until it ends, and logs its failure; returns it.</summary>
    public Task Track(string name, Task task)
    {
        ArgumentNullException.ThrowIfNull(task);
        if (task.IsCompleted)
        {
            Observe(name, task);
            return task;
        }
        Enter();
        new Piece(this, name, null, null, null).Watch(task);
        return task;
    }

    /// <summary>Keeps a <see cref="ValueTask"/> until it ends (see <see cref="Track(string, Task)"/>).</summary>
    public void Track(string name, ValueTask task)
    {
        if (task.IsCompletedSuccessfully)
        {
            return;
        }
        Track(name, task.AsTask());
    }

    /// <summary>
    /// Counts one piece of work that waits as a bare continuation rather than a task of its own (a long-lived stream
    /// handler's tail), so <see cref="Running"/> and <see cref="StopAsync"/> see it, until <see cref="Release"/>.
    /// </summary>
    public void Hold() => Enter();

    /// <summary>Ends what <see cref="Hold"/> counted.</summary>
    public void Release() => Leave();

    private void Enter()
    {
        lock (_gate)
        {
            _running++;
        }
    }

    private void Leave()
    {
        TaskCompletionSource? idle = null;
        lock (_gate)
        {
            if (--_running == 0)
            {
                idle = _idle;
                _idle = null;
            }
        }
        // Outside the lock; whoever waits for idle resumes here, as it did when the last task it waited for completed.
        idle?.TrySetResult();
    }

    private void Observe(string name, Task task)
    {
        if (task.IsCanceled || task.Exception is not { } error)
        {
            return;
        }
        var failure = Failures.Classify(error, _stopping.Token);
        switch (failure.Kind)
        {
            case FailureKind.Cancelled:
                break;
            case FailureKind.Internal:
                LogBug(_owner, name, error.InnerExceptions.Count == 1 ? error.InnerExceptions[0] : error);
                break;
            default:
                LogEnded(_owner, name, failure.Kind, failure.Reason);
                break;
        }
    }

    /// <summary>
    /// A token source for one short-lived operation (a dial, a request, a negotiation): cancelled when
    /// <paramref name="first"/>, <paramref name="second"/> or <paramref name="third"/> is, or when this owner stops;
    /// dispose it when the operation ends. As <c>CreateLinkedTokenSource(first, second, Stopping)</c>, but no node-lifetime token keeps a registration
    /// for it: .NET keeps a token source's unregistered callback nodes for reuse until the source dies, so a stop token
    /// that every operation registered on held its peak count of operations in flight for the node's life (80 B each).
    /// Here the owner keeps the operation in a list of its own while it runs, and nothing after; so does any other owner
    /// of the same runtime whose stop token is one of the three (a handler's router, a service's other owner). Any other
    /// token is registered on as a linked source would.
    /// </summary>
    public CancellationTokenSource Link(CancellationToken first, CancellationToken second = default, CancellationToken third = default)
    {
        var operation = new LinkedOperation();
        operation.Attach(this, first, second, third);
        return operation;
    }

    /// <summary>Operations linked by <see cref="Link"/> to this owner and not yet disposed (for tests and diagnostics).</summary>
    public int Linked
    {
        get
        {
            lock (_gate)
            {
                var count = 0;
                for (var link = _linked; link is not null; link = link.Next)
                {
                    count++;
                }
                return count;
            }
        }
    }

    /// <summary>The owner in this owner's family whose stop token <paramref name="token"/> is, if any.</summary>
    private BackgroundWork? OwnerOf(CancellationToken token)
    {
        if (token == _stoppingToken)
        {
            return this;
        }
        if (_family is { } family)
        {
            foreach (var member in family.Members)
            {
                if (token == member._stoppingToken)
                {
                    return member;
                }
            }
        }
        return null;
    }

    private StopLink? _linked; // newest first

    /// <summary>Adds <paramref name="link"/> to the owner's list; false when the owner is already stopping.</summary>
    private bool Add(StopLink link)
    {
        lock (_gate)
        {
            if (_stopped != 0)
            {
                return false;
            }
            link.Next = _linked;
            if (_linked is not null)
            {
                _linked.Previous = link;
            }
            _linked = link;
            link.Owner = this;
            return true;
        }
    }

    private void Remove(StopLink link)
    {
        lock (_gate)
        {
            if (link.Owner is null)
            {
                return; // taken off by the stop (cancelled, or about to be)
            }
            if (link.Previous is not null)
            {
                link.Previous.Next = link.Next;
            }
            else
            {
                _linked = link.Next;
            }
            if (link.Next is not null)
            {
                link.Next.Previous = link.Previous;
            }
            link.Owner = null;
            link.Previous = link.Next = null;
        }
    }

    private void CancelLinked()
    {
        List<LinkedOperation>? operations = null;
        lock (_gate)
        {
            for (var link = _linked; link is not null;)
            {
                (operations ??= []).Add(link.Operation);
                var next = link.Next;
                link.Owner = null;
                link.Previous = link.Next = null;
                link = next;
            }
            _linked = null;
        }
        if (operations is null)
        {
            return;
        }
        foreach (var operation in operations)
        {
            operation.CancelQuietly();
        }
    }

    /// <summary>An operation's place in one owner's list.</summary>
    private sealed class StopLink(LinkedOperation operation)
    {
        public readonly LinkedOperation Operation = operation;
        public BackgroundWork? Owner;
        public StopLink? Previous;
        public StopLink? Next;
    }

    /// <summary>What <see cref="Link"/> returns: registered on the operation's own tokens, listed by the owners it stops with.</summary>
    private sealed class LinkedOperation : CancellationTokenSource
    {
        private static readonly Action<object?> CancelCallback = static s => ((LinkedOperation)s!).CancelQuietly();
        private StopLink? _owner;
        private StopLink? _viaFirst;
        private StopLink? _viaSecond;
        private StopLink? _viaThird;
        private CancellationTokenRegistration _first;
        private CancellationTokenRegistration _second;
        private CancellationTokenRegistration _third;

        public void Attach(BackgroundWork owner, CancellationToken first, CancellationToken second, CancellationToken third)
        {
            _owner = Listed(owner);
            var byFirst = Register(first, owner, null, null, ref _first, ref _viaFirst);
            var bySecond = Register(second, owner, byFirst, null, ref _second, ref _viaSecond);
            Register(third, owner, byFirst, bySecond, ref _third, ref _viaThird);
        }

        private StopLink? Listed(BackgroundWork work)
        {
            var link = new StopLink(this);
            if (work.Add(link))
            {
                return link;
            }
            CancelQuietly(); // the owner already stops: as a token already cancelled
            return null;
        }

        /// <summary>Links to <paramref name="token"/>: by a place in its owner's list when it is a stop token of the family, else by a registration.</summary>
        private BackgroundWork? Register(CancellationToken token, BackgroundWork owner, BackgroundWork? listedAlready, BackgroundWork? listedToo,
            ref CancellationTokenRegistration registration, ref StopLink? via)
        {
            if (!token.CanBeCanceled)
            {
                return null;
            }
            if (owner.OwnerOf(token) is { } stoppedBy)
            {
                if (!ReferenceEquals(stoppedBy, owner) && !ReferenceEquals(stoppedBy, listedAlready) && !ReferenceEquals(stoppedBy, listedToo))
                {
                    via = Listed(stoppedBy);
                }
                return stoppedBy;
            }
            if (token.IsCancellationRequested)
            {
                CancelQuietly();
                return null;
            }
            registration = token.UnsafeRegister(CancelCallback, this);
            return null;
        }

        public void CancelQuietly()
        {
            try
            {
                Cancel();
            }
            catch (ObjectDisposedException)
            {
                // ended meanwhile: nothing left to cancel
            }
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                _first.Dispose();
                _second.Dispose();
                _third.Dispose();
                Unlist(ref _owner);
                Unlist(ref _viaFirst);
                Unlist(ref _viaSecond);
                Unlist(ref _viaThird);
            }
            base.Dispose(disposing);
        }

        private static void Unlist(ref StopLink? link)
        {
            if (link is { } l)
            {
                l.Owner?.Remove(l);
                link = null;
            }
        }
    }

    /// <summary>Completes when no work is running (work started meanwhile is waited for too); cancels nothing.</summary>
    public async Task WhenIdleAsync()
    {
        while (true)
        {
            Task idle;
            lock (_gate)
            {
                if (_running == 0)
                {
                    return;
                }
                idle = (_idle ??= new TaskCompletionSource()).Task;
            }
            await idle;
        }
    }

    /// <summary>Cancels <see cref="Stopping"/> and waits for every piece of work still running (their failures are logged, not thrown).</summary>
    public async Task StopAsync()
    {
        if (Interlocked.Exchange(ref _stopped, 1) == 0)
        {
            // Cancel, not CancelAsync: the callbacks run here, on the owner's scheduler, not on the thread pool. The
            // token first (whoever an operation's cancellation wakes sees that the owner is stopping), then the
            // operations linked to it, newest first, as the token's own registrations run.
            _stopping.Cancel();
            CancelLinked();
        }
        await WhenIdleAsync();
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        _family?.Remove(this);
        _stopping.Dispose();
    }

    /// <summary>
    /// One piece of background work, as one small object: queued on the owner's scheduler (a work item on the thread
    /// pool, a task on the simulation's loop, so the work's synchronous part sees that scheduler as
    /// <see cref="TaskScheduler.Current"/>), it calls the work, drops the delegate, and registers one continuation on the
    /// work's task that logs its failure and leaves the owner's count. No task is started to start it, none unwraps it
    /// and none continues it (StartNew + Unwrap + ContinueWith held ~290 B per parked piece; this ~180 B in the simulation).
    /// The continuation runs where the work completes when that is the context it was registered on (inline, as an
    /// unwrapped task's continuation ran), else it is posted back to that context.
    /// </summary>
    private sealed class Piece(BackgroundWork owner, string name, Func<CancellationToken, object?, Task>? work, object? state, TaskCompletionSource? done)
    {
        private Func<CancellationToken, object?, Task>? _work = work;
        private object? _state = state;
        private Task? _task;

        public void Queue(TaskScheduler scheduler)
        {
            if (scheduler == TaskScheduler.Default)
            {
                ThreadPool.QueueUserWorkItem(static p => p.Run(), this, preferLocal: false); // flows the execution context (log scopes)
                return;
            }
            Task.Factory.StartNew(static p => ((Piece)p!).Run(), this, CancellationToken.None, TaskCreationOptions.DenyChildAttach, scheduler);
        }

        private void Run()
        {
            var work = _work!;
            var state = _state;
            _work = null; // nothing but the running work holds what it captured
            _state = null;
            Task task;
            try
            {
                task = work(owner._stopping.Token, state) ?? Task.CompletedTask;
            }
            catch (Exception e)
            {
                task = Task.FromException(e); // thrown before its first await: the same failure as a faulted task
            }
            Watch(task);
        }

        public void Watch(Task task)
        {
            if (task.IsCompleted)
            {
                End(task);
                return;
            }
            _task = task;
            task.ConfigureAwait(ConfigureAwaitOptions.ContinueOnCapturedContext | ConfigureAwaitOptions.SuppressThrowing)
                .GetAwaiter().OnCompleted(End);
        }

        private void End()
        {
            var task = _task!;
            _task = null;
            End(task);
        }

        private void End(Task task)
        {
            owner.Observe(name, task);
            if (done is not null)
            {
                // Start's task ends as the work did (an awaiter sees its failure), already observed.
                if (task.IsFaulted)
                {
                    done.TrySetException(task.Exception!.InnerExceptions);
                    _ = done.Task.Exception;
                }
                else if (task.IsCanceled)
                {
                    done.TrySetCanceled();
                }
                else
                {
                    done.TrySetResult();
                }
            }
            owner.Leave();
        }
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "{Owner}: background work {Name} failed")]
    private partial void LogBug(string owner, string name, Exception e);

    [LoggerMessage(Level = LogLevel.Debug, Message = "{Owner}: background work {Name} ended: {Kind}: {Reason}")]
    private partial void LogEnded(string owner, string name, FailureKind kind, string reason);
}
