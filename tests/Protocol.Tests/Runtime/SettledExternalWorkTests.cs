using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Tests.Runtime;

/// <summary>
/// Work on other threads (a sandbox run) awaited through <see cref="NodeRuntime.Settle{T}"/>: its result reaches the loop
/// at a moment and in an order that do not depend on how fast the thread ran, so a simulation with one seed is the same
/// run, event for event (<see cref="EventDigest"/>). Awaited directly, a run that ended before its awaiter looked
/// continued inline and one that ended after posted back: one event more or fewer, in another place.
/// </summary>
public class SettledExternalWorkTests
{
    private sealed record Outcome(long Events, long ItemsAndTimers, string Digest, string Order, string Log);

    /// <summary>
    /// Two runs begun A then B, each holding an external-work mark as the sandbox executor does. With
    /// <paramref name="aEndsFirst"/> A's result is there before anyone awaits it (as a quick run's is) and B ends on a
    /// thread later; otherwise B ends first, on its thread, and A's thread ends only after it: the two runs race the other way.
    /// </summary>
    private static Outcome Run(bool aEndsFirst)
    {
        var driver = new VirtualTimeDriver();
        using var log = new StringWriter();
        var digest = driver.DigestEvents(log);
        var order = new List<string>();
        driver.RunUntilComplete(async d =>
        {
            var runtime = d.CreateRuntime(1);
            var markA = runtime.BeginExternalWork();
            var markB = runtime.BeginExternalWork();
            var a = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
            var b = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
            using var bEnded = new ManualResetEventSlim();
            Thread worker;
            if (aEndsFirst)
            {
                a.SetResult("A");
                worker = new Thread(() => b.SetResult("B"));
            }
            else
            {
                worker = new Thread(() =>
                {
                    b.SetResult("B");
                    a.SetResult("A"); // after B, on the same thread: A ends last
                });
            }
            var resumedA = Resume(runtime.Settle(a.Task), markA, order);
            var resumedB = Resume(runtime.Settle(b.Task), markB, order);
            worker.Start();
            await Task.WhenAll(resumedA, resumedB);
            await Task.Delay(TimeSpan.FromSeconds(1), d.Clock); // a timer too, so the digest sees both kinds
            worker.Join(); // ended already: its last act completed what was awaited
        });
        return new Outcome(digest.Count, driver.Loop.ItemsRun + driver.Clock.TimersFired, digest.Hash, string.Join(",", order), log.ToString());
    }

    /// <summary>Awaits a run and lets its mark go once resumed, as the sandbox executor does.</summary>
    private static async Task Resume(Task<string> settled, IDisposable mark, List<string> order)
    {
        using (mark)
        {
            order.Add(await settled);
        }
    }

    [Test]
    public void ExternalWork_ThatEndsBeforeOrAfterItsAwaiterLooks_GivesTheSameEvents_InTheOrderItBegan()
    {
        var quick = Run(aEndsFirst: true);
        var slow = Run(aEndsFirst: false);

        Assert.That(quick.Order, Is.EqualTo("A,B"), "results come in as the runs began");
        Assert.That(slow.Order, Is.EqualTo("A,B"), "results come in as the runs began, not as they ended (B first)");
        Assert.That(slow.Events, Is.EqualTo(quick.Events), $"the same events, to the count:\n{quick.Log}\nagainst\n{slow.Log}");
        Assert.That(slow.Log, Is.EqualTo(quick.Log), "the same events, one by one");
        Assert.That(slow.Digest, Is.EqualTo(quick.Digest));
        Assert.That(quick.Events, Is.EqualTo(quick.ItemsAndTimers), "the digest sees every item and timer the loop and clock count");
        Assert.That(quick.Log, Does.Contain(" timer ").And.Contain(" item "));
    }

    [Test]
    public void EventDigest_OtherWork_GivesAnotherHash()
    {
        static string Digest(int delays) => RunDigest(async d =>
        {
            for (var i = 0; i < delays; i++)
            {
                await Task.Delay(TimeSpan.FromMilliseconds(10), d.Clock);
            }
        });

        Assert.That(Digest(3), Is.EqualTo(Digest(3)));
        Assert.That(Digest(4), Is.Not.EqualTo(Digest(3)), "one timer more");
        Assert.That(RunDigest(async d =>
        {
            await Task.Delay(TimeSpan.FromMilliseconds(20), d.Clock);
            await Task.Delay(TimeSpan.FromMilliseconds(10), d.Clock);
        }), Is.Not.EqualTo(RunDigest(async d =>
        {
            await Task.Delay(TimeSpan.FromMilliseconds(10), d.Clock);
            await Task.Delay(TimeSpan.FromMilliseconds(20), d.Clock);
        })), "the same events at other virtual times");
    }

    private static string RunDigest(Func<VirtualTimeDriver, Task> body)
    {
        var driver = new VirtualTimeDriver();
        var digest = driver.DigestEvents();
        driver.RunUntilComplete(body);
        return $"{digest.Count}:{digest.Hash}";
    }

    [Test]
    public void SettledWork_ThatFails_OrIsCancelled_ComesInAsItEnded()
    {
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        var (failure, cancellation) = VirtualTimeDriver.Run(async d =>
        {
            var runtime = d.CreateRuntime(1);
            Exception? failure = null;
            OperationCanceledException? cancellation = null;
            using (runtime.BeginExternalWork())
            {
                try
                {
                    await runtime.Settle(Task.FromException<int>(new InvalidOperationException("sandbox broke")));
                }
                catch (InvalidOperationException e)
                {
                    failure = e;
                }
            }
            using (runtime.BeginExternalWork())
            {
                try
                {
                    await runtime.Settle(Task.FromCanceled<int>(cts.Token));
                }
                catch (OperationCanceledException e)
                {
                    cancellation = e;
                }
            }
            return (failure, cancellation);
        });
        Assert.That(failure?.Message, Is.EqualTo("sandbox broke"));
        Assert.That(cancellation?.CancellationToken, Is.EqualTo(cts.Token));
    }

    [Test]
    public void Settle_OnARealNode_IsTheWorkItself()
    {
        var work = Task.FromResult(3);
        Assert.That(NodeRuntime.System.Settle(work), Is.SameAs(work));
    }
}
