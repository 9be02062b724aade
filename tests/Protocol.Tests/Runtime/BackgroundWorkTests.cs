using Microsoft.Extensions.Logging;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Yamux;

namespace Potluck.Protocol.Tests.Runtime;

/// <summary>
/// <see cref="BackgroundWork"/> runs each piece as one state machine (no StartNew, Unwrap or ContinueWith): these pin what
/// that must keep — the work starts on the owner's scheduler after the caller's code, every failure (thrown before the
/// first await too) is logged once, the returned task ends as the work did, and stop waits for every piece and tracked task.
/// </summary>
public class BackgroundWorkTests
{
    [Test]
    public void Start_RunsOnTheScheduler_AfterTheCallersCode_NotInline()
    {
        var order = new List<string>();
        VirtualTimeDriver.Run(async d =>
        {
            var work = new BackgroundWork("test", new RecordingLogger(), d.Loop.TaskScheduler);
            TaskScheduler? seen = null;
            var piece = work.Start("piece", _ =>
            {
                order.Add("work");
                seen = TaskScheduler.Current;
                return Task.CompletedTask;
            });
            order.Add("caller");
            Assert.That(work.Running, Is.EqualTo(1), "counted from the moment it is started");
            await piece;
            Assert.That(seen, Is.SameAs(d.Loop.TaskScheduler), "the work's synchronous part sees the owner's scheduler");
            await d.IdleAsync();
            Assert.That(work.Running, Is.Zero, "the piece left the count right after its task completed");
            await work.StopAsync();
        });
        Assert.That(order, Is.EqualTo(new[] { "caller", "work" }));
    }

    [Test]
    public void Failures_ThrownBeforeTheFirstAwait_OrLater_AreLoggedOnce_AndTheReturnedTaskEndsAsTheWorkDid()
    {
        var log = new RecordingLogger();
        VirtualTimeDriver.Run(async d =>
        {
            var work = new BackgroundWork("test", log, d.Loop.TaskScheduler);
            var gate = new TaskCompletionSource();
            var thrown = work.Start("sync bug", _ => throw new InvalidOperationException("sync"));
            var later = work.Start("async peer", async _ =>
            {
                await gate.Task;
                throw new StreamResetException("reset later");
            });
            var cancelled = work.Start("cancelled", _ => Task.FromCanceled(new CancellationToken(true)));
            var tracked = Task.FromException(new InvalidOperationException("tracked"));
            var pendingTracked = new TaskCompletionSource();
            _ = work.Track("tracked bug", tracked);
            _ = work.Track("tracked later", pendingTracked.Task);
            await d.IdleAsync();
            Assert.That(work.Running, Is.EqualTo(2), "the async piece and the pending tracked task");

            gate.SetResult();
            pendingTracked.SetException(new InvalidOperationException("tracked later"));
            await d.IdleAsync();
            Assert.That(work.Running, Is.Zero);
            Assert.That(thrown.Exception?.InnerException, Is.TypeOf<InvalidOperationException>(), "Start's task ends as the work did");
            Assert.That(later.Exception?.InnerException, Is.TypeOf<StreamResetException>());
            Assert.That(cancelled.IsCanceled, Is.True);
            await work.StopAsync();
        });

        var errors = log.Entries.Where(e => e.Level == LogLevel.Error).Select(e => e.Message).ToList();
        Assert.That(errors, Has.Count.EqualTo(3));
        Assert.That(errors, Has.Exactly(1).Contains("sync bug"));
        Assert.That(errors, Has.Exactly(1).Contains("tracked bug"));
        Assert.That(errors, Has.Exactly(1).Contains("tracked later"));
        Assert.That(log.Entries.Where(e => e.Level == LogLevel.Error).Select(e => e.Message), Has.All.Contains("failed"));
        Assert.That(log.Entries.Where(e => e.Level == LogLevel.Debug).Select(e => e.Message), Has.Exactly(1).Contains("async peer"));
        Assert.That(log.Entries, Has.Count.EqualTo(4), "the cancelled piece is quiet");
    }

    [Test]
    public void Stop_WaitsForEveryPiece_IncludingWorkStartedWhileWaiting_AndStopsStartingMore()
    {
        VirtualTimeDriver.Run(async d =>
        {
            var work = new BackgroundWork("test", new RecordingLogger(), d.Loop.TaskScheduler);
            var first = new TaskCompletionSource();
            var second = new TaskCompletionSource();
            var tracked = new TaskCompletionSource();
            var secondEnded = false;
            work.Run("first", async () =>
            {
                await first.Task;
                // Started by running work after stop began: refused (stop has begun), so stop does not wait for it.
                work.Run("after stop", () => Task.FromException(new InvalidOperationException("must not run")));
            });
            var idle = work.WhenIdleAsync();
            work.Run("second", async ct =>
            {
                await second.Task;
                secondEnded = true;
            });
            _ = work.Track("tracked", tracked.Task);
            await d.IdleAsync();

            var stop = work.StopAsync();
            await d.IdleAsync();
            Assert.That(stop.IsCompleted, Is.False);
            first.SetResult();
            await d.IdleAsync();
            Assert.That(stop.IsCompleted || idle.IsCompleted, Is.False, "two pieces still run");
            tracked.SetResult();
            await d.IdleAsync();
            Assert.That(stop.IsCompleted, Is.False, "one piece still runs");
            second.SetResult();
            await stop;
            await idle;
            Assert.That(secondEnded, Is.True, "stop returned only after the last piece ended");
            Assert.That(work.Running, Is.Zero);
        });
    }

    [Test]
    public async Task ThreadPool_PieceRunsOffTheCaller_WithItsExecutionContext_AndStopWaits()
    {
        var flowing = new AsyncLocal<string>();
        flowing.Value = "scope";
        var log = new RecordingLogger();
        var work = new BackgroundWork("test", log);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        string? seen = null;
        var pool = false;
        var piece = work.Start("pool", async _ =>
        {
            seen = flowing.Value;
            pool = Thread.CurrentThread.IsThreadPoolThread;
            await release.Task;
            throw new InvalidOperationException("pool bug");
        });
        var stop = work.StopAsync();
        Assert.That(stop.IsCompleted, Is.False, "the piece waits on release");
        release.SetResult();
        await stop;
        Assert.That(piece.IsFaulted, Is.True);
        Assert.That(seen, Is.EqualTo("scope"), "the execution context (log scopes) flows into the work");
        Assert.That(pool, Is.True);
        Assert.That(log.Entries.Where(e => e.Level == LogLevel.Error).Select(e => e.Message), Has.Exactly(1).Contains("work pool failed"));
    }

    private sealed class RecordingLogger : ILogger
    {
        public List<(LogLevel Level, string Message)> Entries { get; } = [];

        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            lock (Entries)
            {
                Entries.Add((logLevel, formatter(state, exception)));
            }
        }
    }
}
