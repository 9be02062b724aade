using System.IO.Pipelines;
using System.Threading.Channels;
using Microsoft.Extensions.Logging.Abstractions;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Tests.Runtime;

public class VirtualTimeDriverTests
{
    [Test]
    public void LongDelays_CostNoWallTime_AndTheClockLandsOnTheDeadline()
    {
        var started = DateTime.UtcNow;
        var elapsed = VirtualTimeDriver.Run(async d =>
        {
            await Task.Delay(TimeSpan.FromHours(5), d.Clock);
            await Task.Delay(TimeSpan.FromMinutes(30), d.Clock);
            return d.Clock.Elapsed;
        });

        Assert.That(elapsed, Is.EqualTo(TimeSpan.FromHours(5.5)));
        Assert.That(DateTime.UtcNow - started, Is.LessThan(TimeSpan.FromSeconds(30)), "no wall-clock wait (generous bound for a loaded machine)");
    }

    [Test]
    public void AClockJump_IsNoEventOfItsOwn_TheTimersItFiresAre()
    {
        var driver = new VirtualTimeDriver();
        var digest = driver.DigestEvents();
        long events = 0, items = 0;
        driver.RunUntilComplete(async d =>
        {
            var (eventsBefore, itemsBefore) = (digest.Count, d.Loop.ItemsRun);
            for (var i = 0; i < 3; i++)
            {
                await Task.Delay(TimeSpan.FromSeconds(1), d.Clock);
            }
            (events, items) = (digest.Count - eventsBefore, d.Loop.ItemsRun - itemsBefore);
        });

        Assert.That(driver.Jumps, Is.EqualTo(3), "three moments of virtual time");
        Assert.That(driver.Clock.TimersFired, Is.EqualTo(3));
        // Each delay's timer fires on the loop's thread with the loop as context, and the body goes on within it: the three
        // timers are the only events (a jump that was an item of its own made six, and three items).
        Assert.That(events, Is.EqualTo(3));
        Assert.That(items, Is.Zero);
    }

    [Test]
    public void AClockJump_StillRunsOnTheLoopsThread_WithTheLoopAsContext()
    {
        var seen = VirtualTimeDriver.Run(async d =>
        {
            var fired = new List<(bool OnLoop, bool LoopContext)>();
            using var timer = d.Clock.CreateTimer(_ => fired.Add((d.Loop.IsRunningOnThisThread, SynchronizationContext.Current == d.Loop)), null,
                TimeSpan.FromSeconds(2), Timeout.InfiniteTimeSpan);
            await Task.Delay(TimeSpan.FromSeconds(3), d.Clock);
            return fired;
        });

        Assert.That(seen, Is.EqualTo(new[] { (true, true) }));
    }

    [Test]
    public void AWaitThatCanNeverEnd_FailsAtOnce_InsteadOfHanging()
    {
        var never = new TaskCompletionSource();

        var e = Assert.Throws<VirtualTimeStuckException>(() => VirtualTimeDriver.Run(async _ => await never.Task));

        Assert.That(e!.Message, Does.Contain("no timer is armed"));
    }

    [Test]
    public void APerpetualTimer_CannotHideAStuckWait_PastTheVirtualTimeLimit()
    {
        var never = new TaskCompletionSource();

        var e = Assert.Throws<VirtualTimeStuckException>(() => VirtualTimeDriver.Run(async d =>
        {
            using var heartbeat = new PeriodicTimer(TimeSpan.FromSeconds(1), d.Clock);
            var ticking = Task.Factory.StartNew(async () =>
            {
                while (await heartbeat.WaitForNextTickAsync())
                {
                }
            }, CancellationToken.None, TaskCreationOptions.None, d.Loop.TaskScheduler);
            await never.Task;
        }, new VirtualTimeLimits { MaxVirtualTime = TimeSpan.FromMinutes(1) }));

        Assert.That(e!.Message, Does.Contain("virtual time would pass"));
    }

    [Test]
    public void Continuations_AllRunOnTheDriversThread()
    {
        var threads = VirtualTimeDriver.Run(async d =>
        {
            var seen = new HashSet<int> { Environment.CurrentManagedThreadId };
            var channel = Channel.CreateBounded<int>(1);
            var work = new BackgroundWork("test", NullLogger.Instance, d.Loop.TaskScheduler);
            work.Run("producer", async ct =>
            {
                for (var i = 0; i < 10; i++)
                {
                    seen.Add(Environment.CurrentManagedThreadId);
                    await Task.Delay(TimeSpan.FromSeconds(1), d.Clock, ct);
                    await channel.Writer.WriteAsync(i, ct);
                }
                channel.Writer.Complete();
            });
            while (await channel.Reader.WaitToReadAsync())
            {
                while (channel.Reader.TryRead(out _))
                {
                    seen.Add(Environment.CurrentManagedThreadId);
                }
            }
            await work.StopAsync();
            return seen;
        });

        Assert.That(threads, Has.Count.EqualTo(1));
    }

    [Test]
    public void WorkThatEscapesToTheThreadPool_FailsTheRun_WithWhereItCameFrom()
    {
        var e = Assert.Throws<VirtualTimeStuckException>(() => VirtualTimeDriver.Run(async d =>
        {
            await Task.Run(() => Thread.Sleep(10));
            await Task.Delay(TimeSpan.FromSeconds(1), d.Clock);
        }));

        Assert.That(e!.Message, Does.Contain("escaped the event loop"));
    }

    [Test]
    public void Pipes_OnTheLoopsScheduler_StayOnTheLoop()
    {
        VirtualTimeDriver.Run(async d =>
        {
            var thread = Environment.CurrentManagedThreadId;
            var pipe = new Pipe(new PipeOptions(readerScheduler: d.Loop.PipeScheduler, writerScheduler: d.Loop.PipeScheduler,
                pauseWriterThreshold: 4, resumeWriterThreshold: 2, useSynchronizationContext: false));
            var reader = Task.Factory.StartNew(async () =>
            {
                long total = 0;
                while (true)
                {
                    var result = await pipe.Reader.ReadAsync();
                    Assert.That(Environment.CurrentManagedThreadId, Is.EqualTo(thread));
                    total += result.Buffer.Length;
                    pipe.Reader.AdvanceTo(result.Buffer.End);
                    if (result.IsCompleted)
                    {
                        return total;
                    }
                }
            }, CancellationToken.None, TaskCreationOptions.None, d.Loop.TaskScheduler).Unwrap();
            for (var i = 0; i < 100; i++)
            {
                await pipe.Writer.WriteAsync(new byte[3]); // past the pause threshold: the writer waits for the reader each time
                Assert.That(Environment.CurrentManagedThreadId, Is.EqualTo(thread));
            }
            await pipe.Writer.CompleteAsync();
            Assert.That(await reader, Is.EqualTo(300));
        });
    }

    [Test]
    public void IdleAsync_CompletesOnceEverythingSetInMotionHasRun_WithoutMovingTheClock()
    {
        VirtualTimeDriver.Run(async d =>
        {
            var steps = 0;
            async Task Chain()
            {
                for (var i = 0; i < 50; i++)
                {
                    await Task.Yield();
                    steps++;
                }
            }
            var chain = Task.Factory.StartNew(Chain, CancellationToken.None, TaskCreationOptions.None, d.Loop.TaskScheduler).Unwrap();
            await d.IdleAsync();

            Assert.That(steps, Is.EqualTo(50));
            Assert.That(chain.IsCompletedSuccessfully, Is.True);
            Assert.That(d.Clock.Elapsed, Is.EqualTo(TimeSpan.Zero));
        });
    }

    [Test]
    public void ExternalWork_IsWaitedFor_BeforeTheClockMoves()
    {
        VirtualTimeDriver.Run(async d =>
        {
            var timerFired = false;
            using var timer = d.Clock.CreateTimer(_ => timerFired = true, null, TimeSpan.FromSeconds(1), Timeout.InfiniteTimeSpan);
            var handle = d.Loop.BeginExternalWork();
            var done = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
            var worker = new Thread(() =>
            {
                Thread.Sleep(50); // a real thread doing real work (as the sandbox does), not a test waiting
                done.SetResult(timerFired);
                handle.Dispose();
            });
            worker.Start();
            var sawTimer = await done.Task;

            Assert.That(sawTimer, Is.False, "the clock did not move while external work was outstanding");
            Assert.That(d.Clock.Elapsed, Is.EqualTo(TimeSpan.Zero));
        });
    }

    [Test]
    public void SameSeed_SameTrace_OtherSeed_OtherTrace()
    {
        static string Trace(long seed) => VirtualTimeDriver.Run(async d =>
        {
            var runtime = d.CreateRuntime(seed);
            var random = runtime.CreateRandom("workers");
            var trace = new List<string>();
            var work = runtime.CreateBackgroundWork("test", NullLogger.Instance);
            for (var w = 0; w < 5; w++)
            {
                var id = w;
                var delays = Enumerable.Range(0, 10).Select(_ => random.Next(1, 1000)).ToArray();
                work.Run($"worker {id}", async ct =>
                {
                    foreach (var delay in delays)
                    {
                        await Task.Delay(TimeSpan.FromMilliseconds(delay), runtime.Time, ct);
                        trace.Add($"{runtime.Time.GetUtcNow().Ticks}:{id}:{Convert.ToHexString(runtime.SecureRandom.GetBytes(2))}");
                    }
                });
            }
            while (work.Running > 0)
            {
                await Task.Delay(TimeSpan.FromSeconds(1), runtime.Time);
            }
            return string.Join(",", trace);
        });

        Assert.That(Trace(7), Is.EqualTo(Trace(7)));
        Assert.That(Trace(7), Is.Not.EqualTo(Trace(8)));
    }
}
