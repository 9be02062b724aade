using Potluck.Scheduler.Sandbox;

namespace Potluck.Scheduler.Tests.Sandbox;

public class RunnerThreadsTests
{
    private static readonly TimeSpan Generous = TimeSpan.FromSeconds(30);

    private static void WaitIdle(RunnerThreads runners, int count)
        => Assert.That(runners.WaitUntilIdle(count, Generous), Is.True, $"expected {count} idle runner(s)");

    [Test]
    public void SequentialRuns_ReuseOneThread_WithTheLargeStack()
    {
        using var runners = new RunnerThreads(16 * 1024 * 1024, 2, "test-runner");
        var threads = new List<int>();
        for (var i = 0; i < 5; i++)
        {
            using var done = new ManualResetEventSlim();
            runners.Run(() =>
            {
                threads.Add(Environment.CurrentManagedThreadId);
                done.Set();
            });
            Assert.That(done.Wait(Generous), Is.True);
            WaitIdle(runners, 1);
        }

        Assert.That(runners.Started, Is.EqualTo(1));
        Assert.That(threads.Distinct().Count(), Is.EqualTo(1));
    }

    [Test]
    public void ConcurrentRuns_EachGetAThread_AndOnlyMaxIdleStayParked()
    {
        using var runners = new RunnerThreads(1024 * 1024, 1, "test-runner");
        using var release = new ManualResetEventSlim();
        using var bothRunning = new CountdownEvent(2);
        for (var i = 0; i < 2; i++)
        {
            runners.Run(() =>
            {
                bothRunning.Signal();
                release.Wait();
            });
        }
        Assert.That(bothRunning.Wait(Generous), Is.True, "a run waited for another instead of getting its own thread");
        release.Set();
        WaitIdle(runners, 1);

        Assert.That(runners.Started, Is.EqualTo(2));
        Assert.That(runners.Idle, Is.EqualTo(1));
    }

    [Test]
    public void ExecutionContext_FlowsToTheRun()
    {
        using var runners = new RunnerThreads(1024 * 1024, 1, "test-runner");
        var local = new AsyncLocal<string> { Value = "caller" };
        string? seen = null;
        using var done = new ManualResetEventSlim();

        runners.Run(() =>
        {
            seen = local.Value;
            done.Set();
        });

        Assert.That(done.Wait(Generous), Is.True);
        Assert.That(seen, Is.EqualTo("caller"));
    }

    [Test]
    public void AfterDispose_RunThrows_AndIdleThreadsEnd()
    {
        var runners = new RunnerThreads(1024 * 1024, 1, "test-runner");
        using var done = new ManualResetEventSlim();
        runners.Run(done.Set);
        Assert.That(done.Wait(Generous), Is.True);
        WaitIdle(runners, 1);

        runners.Dispose();

        Assert.That(runners.Idle, Is.Zero);
        Assert.Throws<ObjectDisposedException>(() => runners.Run(() => { }));
    }

    [Test]
    public async Task Sandbox_ExecuteAsync_ReusesItsRunnerThread_AndMatchesExecute()
    {
        using var fixture = new SandboxFixture();
        var sandbox = fixture.Create(diskCache: false);
        var spec = new TaskSpec { Module = Samples.Load("hashchain"), Args = ["50"] };
        var reference = sandbox.Execute(spec, "seed"u8.ToArray());

        var results = new List<SandboxResult>();
        for (var i = 0; i < 3; i++) results.Add(await sandbox.ExecuteAsync(spec, "seed"u8.ToArray()));

        foreach (var r in results)
        {
            Assert.That(r.Outcome, Is.EqualTo(SandboxOutcome.Success));
            Assert.That(r.Stdout.ToArray(), Is.EqualTo(reference.Stdout.ToArray()));
            Assert.That(r.FuelConsumed, Is.EqualTo(reference.FuelConsumed));
        }
    }

    [Test]
    public void Sandbox_ExecuteAsyncAfterDispose_FaultsTheTask()
    {
        using var fixture = new SandboxFixture();
        var sandbox = fixture.Create(diskCache: false);
        sandbox.Dispose();

        var run = sandbox.ExecuteAsync(new TaskSpec { Module = Samples.Load("hashchain") }, default);

        Assert.ThrowsAsync<ObjectDisposedException>(async () => await run);
    }
}
