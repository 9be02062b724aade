using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Potluck.Protocol.Host;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Yamux;

namespace Potluck.Protocol.Tests.Runtime;

public class FailuresTests
{
    [Test]
    public void Classify_SaysWhoFailed_AndHowFarItReaches()
    {
        using var stopping = new CancellationTokenSource();
        stopping.Cancel();

        Assert.Multiple(() =>
        {
            Assert.That(Failures.Classify(new OperationCanceledException(), stopping.Token).Kind, Is.EqualTo(FailureKind.Cancelled));
            Assert.That(Failures.Classify(new OperationCanceledException()).Kind, Is.EqualTo(FailureKind.PeerGone), "a deadline, not our shutdown");
            Assert.That(Failures.Classify(new StreamResetException("reset")).Kind, Is.EqualTo(FailureKind.PeerGone));
            Assert.That(Failures.Classify(new IOException("broken pipe")).Kind, Is.EqualTo(FailureKind.PeerGone));
            Assert.That(Failures.Classify(new SocketException((int)SocketError.ConnectionReset)).Kind, Is.EqualTo(FailureKind.PeerGone));
            Assert.That(Failures.Classify(new DialException(DialFailure.TooManyConnections, "full")).Kind, Is.EqualTo(FailureKind.ResourceLimit));
            Assert.That(Failures.Classify(new DialException(DialFailure.HostStopped, "stopping")).Kind, Is.EqualTo(FailureKind.Cancelled));
            Assert.That(Failures.Classify(new DialException(DialFailure.Timeout, "slow")).Kind, Is.EqualTo(FailureKind.PeerGone));
            Assert.That(Failures.Classify(new YamuxStreamLimitException(8)).Kind, Is.EqualTo(FailureKind.ResourceLimit));
            Assert.That(Failures.Classify(new ProtocolNotSupportedException(["/x/1"])).Kind, Is.EqualTo(FailureKind.Unsupported));
            Assert.That(Failures.Classify(new InvalidDataException("bad varint")).Kind, Is.EqualTo(FailureKind.ProtocolViolation));

            var violation = Failures.Classify(new ProtocolViolationException("yamux", "bad header", ViolationCode.Malformed, BlastRadius.Connection));
            Assert.That(violation.Kind, Is.EqualTo(FailureKind.ProtocolViolation));
            Assert.That(violation.Radius, Is.EqualTo(BlastRadius.Connection));
            Assert.That(violation.IsRemote, Is.True);

            // Never "the peer went away": these are ours.
            Assert.That(Failures.Classify(new InvalidOperationException("reading after completion")).Kind, Is.EqualTo(FailureKind.Internal));
            Assert.That(Failures.Classify(new NullReferenceException()).Kind, Is.EqualTo(FailureKind.Internal));
            Assert.That(Failures.Classify(new AggregateException(new StreamResetException("reset"))).Kind, Is.EqualTo(FailureKind.PeerGone));
        });
    }

    [Test]
    public void BackgroundWork_LogsOurBugsAtError_RemoteFailuresAtDebug_CancellationNotAtAll()
    {
        var log = new RecordingLogger();
        VirtualTimeDriver.Run(async d =>
        {
            var work = new BackgroundWork("test", log, d.Loop.TaskScheduler);
            var release = new TaskCompletionSource();

            work.Run("bug", () => Task.FromException(new InvalidOperationException("oops")));
            work.Run("peer", () => Task.FromException(new StreamResetException("reset by peer")));
            work.Run("loop", async ct => await Task.Delay(Timeout.Infinite, ct));
            var waiting = work.Start("waits", async _ => await release.Task);
            await d.IdleAsync();
            Assert.That(work.Running, Is.EqualTo(2));

            var stop = work.StopAsync();
            await d.IdleAsync();
            Assert.That(stop.IsCompleted, Is.False, "stop waits for work that does not watch the token");
            release.SetResult();
            await stop;

            Assert.That(work.Running, Is.Zero);
            Assert.That(waiting.IsCompletedSuccessfully, Is.True);
            Assert.That(work.Start("late", _ => Task.FromException(new InvalidOperationException())).IsCompleted, Is.True, "nothing starts after stop");
        });

        Assert.That(log.Entries.Where(e => e.Level == LogLevel.Error).Select(e => e.Message), Has.Exactly(1).Contains("bug"));
        Assert.That(log.Entries.Where(e => e.Level == LogLevel.Debug).Select(e => e.Message), Has.Exactly(1).Contains("PeerGone"));
        Assert.That(log.Entries, Has.Count.EqualTo(2), "the cancelled loop is quiet");
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
