using System.Threading.Channels;
using Potluck.Protocol.Identity;

namespace Potluck.Scheduler.Topics;

/// <summary>
/// Topics shared by the nodes of one test or simulation, in memory: every message published is validated and
/// delivered to every other member subscribed to its topic (a full mesh; no loss, no forwarding). An instance
/// is one network; never static. Each subscriber's validator runs once per message and its handler gets what that
/// validator gave. <see cref="Delivered"/> and <see cref="Rejected"/> count for assertions.
/// </summary>
public sealed class InMemoryTopicHub
{
    private readonly Lock _gate = new();
    private readonly List<Member> _members = [];
    private long _delivered;
    private long _rejected;

    /// <summary>Messages handed to handlers so far.</summary>
    public long Delivered => Interlocked.Read(ref _delivered);

    /// <summary>Messages a validator rejected so far.</summary>
    public long Rejected => Interlocked.Read(ref _rejected);

    /// <summary>A bus for the node <paramref name="self"/>.</summary>
    /// <param name="speaks">Whether the node's identify lists a protocol (a message published with that audience reaches it
    /// only then); null: it speaks every protocol (a node of the current build).</param>
    public ITopicBus Join(PeerId self, Func<string, bool>? speaks = null) => new Member(this, self, speaks);

    /// <summary>Completes when every message published so far has been handled by every subscriber.</summary>
    public async Task WhenIdleAsync(CancellationToken ct)
    {
        List<Subscription> subs;
        lock (_gate)
        {
            subs = [.. _members.SelectMany(m => m.Subscriptions)];
        }
        foreach (var s in subs)
        {
            await s.WhenIdleAsync(ct);
        }
    }

    private void Publish(Member from, string topic, ReadOnlyMemory<byte> data, string? audience)
    {
        List<Subscription> targets;
        lock (_gate)
        {
            targets = [.. _members.Where(m => m != from && (audience is null || m.Speaks is null || m.Speaks(audience)))
                .SelectMany(m => m.Subscriptions).Where(s => s.Topic == topic)];
        }
        var copy = data.ToArray();
        foreach (var target in targets)
        {
            var message = new TopicMessage(topic, copy, from.Self, from.Self);
            if (target.Validate(message, out var validated) != TopicVerdict.Accept)
            {
                Interlocked.Increment(ref _rejected);
                continue;
            }
            if (validated is not null)
            {
                target.Enqueue(message, validated);
            }
        }
    }

    private sealed class Member : ITopicBus
    {
        private readonly InMemoryTopicHub _hub;

        public Member(InMemoryTopicHub hub, PeerId self, Func<string, bool>? speaks)
        {
            _hub = hub;
            Self = self;
            Speaks = speaks;
            lock (hub._gate)
            {
                hub._members.Add(this);
            }
        }

        public PeerId Self { get; }

        public Func<string, bool>? Speaks { get; }

        public List<Subscription> Subscriptions { get; } = [];

        public ValueTask PublishAsync(string topic, ReadOnlyMemory<byte> data, CancellationToken ct) => PublishAsync(topic, data, null, ct);

        public ValueTask PublishAsync(string topic, ReadOnlyMemory<byte> data, string? audience, CancellationToken ct)
        {
            ct.ThrowIfCancellationRequested();
            _hub.Publish(this, topic, data, audience);
            return ValueTask.CompletedTask;
        }

        public IDisposable Subscribe<TValidated>(string topic, TopicValidator<TValidated> validator, Func<TopicMessage, TValidated, CancellationToken, ValueTask> handler)
            where TValidated : class
        {
            var sub = new Subscription(topic, (TopicMessage m, out object? validated) =>
            {
                var verdict = validator(m, out var v);
                validated = v;
                return verdict;
            }, (m, validated, ct) => handler(m, (TValidated)validated, ct), _hub, s =>
            {
                lock (_hub._gate)
                {
                    Subscriptions.Remove(s);
                }
            });
            lock (_hub._gate)
            {
                Subscriptions.Add(sub);
            }
            return sub;
        }
    }

    private sealed class Subscription : IDisposable
    {
        private readonly Channel<(TopicMessage Message, object Validated)> _queue =
            Channel.CreateUnbounded<(TopicMessage, object)>(new UnboundedChannelOptions { SingleReader = true });
        private readonly Func<TopicMessage, object, CancellationToken, ValueTask> _handler;
        private readonly InMemoryTopicHub _hub;
        private readonly Action<Subscription> _remove;
        private readonly CancellationTokenSource _stop = new();
        private readonly Task _pump;
        private long _pending;
        private TaskCompletionSource _idle = NewIdle(completed: true);

        public Subscription(string topic, TopicValidator<object> validator, Func<TopicMessage, object, CancellationToken, ValueTask> handler,
            InMemoryTopicHub hub, Action<Subscription> remove)
        {
            Topic = topic;
            Validate = validator;
            _handler = handler;
            _hub = hub;
            _remove = remove;
            // Started inline: it runs on the caller's context (a test's event loop) up to its first wait.
            _pump = PumpAsync();
        }

        public string Topic { get; }

        public TopicValidator<object> Validate { get; }

        public void Enqueue(TopicMessage message, object validated)
        {
            lock (_queue)
            {
                if (_pending++ == 0)
                {
                    _idle = NewIdle(completed: false);
                }
            }
            if (!_queue.Writer.TryWrite((message, validated)))
            {
                Done();
            }
        }

        public Task WhenIdleAsync(CancellationToken ct)
        {
            lock (_queue)
            {
                return _idle.Task.WaitAsync(ct);
            }
        }

        private async Task PumpAsync()
        {
            try
            {
                while (await _queue.Reader.WaitToReadAsync(_stop.Token))
                {
                    if (!_queue.Reader.TryRead(out var next))
                    {
                        continue;
                    }
                    try
                    {
                        await _handler(next.Message, next.Validated, _stop.Token);
                        Interlocked.Increment(ref _hub._delivered);
                    }
                    catch (OperationCanceledException) when (_stop.IsCancellationRequested)
                    {
                        return;
                    }
#pragma warning disable CA1031 // a test hub: a failing handler must not stop delivery to it
                    catch (Exception)
                    {
                    }
#pragma warning restore CA1031
                    finally
                    {
                        Done();
                    }
                }
            }
            catch (OperationCanceledException)
            {
            }
        }

        private void Done()
        {
            lock (_queue)
            {
                if (--_pending == 0)
                {
                    _idle.TrySetResult();
                }
            }
        }

        private static TaskCompletionSource NewIdle(bool completed)
        {
            var tcs = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            if (completed)
            {
                tcs.SetResult();
            }
            return tcs;
        }

        public void Dispose()
        {
            _remove(this);
            _queue.Writer.TryComplete();
            _stop.Cancel();
            lock (_queue)
            {
                _idle.TrySetResult();
            }
        }
    }
}
