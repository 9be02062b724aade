using Microsoft.Extensions.Logging;
using Potluck.Protocol.Gossipsub;
using Potluck.Scheduler.Topics;

namespace Potluck.Node.Compute;

/// <summary>
/// <see cref="ITopicBus"/> over gossipsub: publishing is <see cref="GossipsubService.PublishAsync"/>, a subscription
/// sets the topic's validator and pumps its messages to the handler one at a time.
/// </summary>
public sealed partial class GossipTopicBus : ITopicBus
{
    private readonly GossipsubService _gossip;
    private readonly ILogger<GossipTopicBus> _log;

    public GossipTopicBus(GossipsubService gossip, ILogger<GossipTopicBus> log)
    {
        _gossip = gossip;
        _log = log;
    }

    public async ValueTask PublishAsync(string topic, ReadOnlyMemory<byte> data, CancellationToken ct) =>
        await _gossip.PublishAsync(topic, data, ct);

    public IDisposable Subscribe(string topic, Func<TopicMessage, TopicVerdict> validator, Func<TopicMessage, CancellationToken, ValueTask> handler)
    {
        _gossip.SetValidator(topic, m => validator(ToTopicMessage(m)) switch
        {
            TopicVerdict.Accept => ValidationResult.Accept,
            TopicVerdict.Reject => ValidationResult.Reject,
            _ => ValidationResult.Ignore,
        });
        var subscription = _gossip.Subscribe(topic);
        return new Pump(this, topic, subscription, handler);
    }

    private static TopicMessage ToTopicMessage(GossipMessage m) => new(m.Topic, m.Data, m.Author, m.ReceivedFrom);

    private sealed class Pump : IDisposable
    {
        private readonly GossipTopicBus _bus;
        private readonly string _topic;
        private readonly GossipSubscription _subscription;
        private readonly CancellationTokenSource _stop = new();

        public Pump(GossipTopicBus bus, string topic, GossipSubscription subscription, Func<TopicMessage, CancellationToken, ValueTask> handler)
        {
            _bus = bus;
            _topic = topic;
            _subscription = subscription;
            // Started inline, on the caller's context, up to its first wait; it ends when the subscription is disposed.
            Running = RunAsync(handler);
        }

        /// <summary>The pump (it never throws: a handler's failure is logged and the next message delivered).</summary>
        public Task Running { get; }

        private async Task RunAsync(Func<TopicMessage, CancellationToken, ValueTask> handler)
        {
            try
            {
                var reader = _subscription.Messages;
                while (await reader.WaitToReadAsync(_stop.Token))
                {
                    if (!reader.TryRead(out var m))
                    {
                        continue;
                    }
                    try
                    {
                        await handler(ToTopicMessage(m), _stop.Token);
                    }
                    catch (OperationCanceledException) when (_stop.IsCancellationRequested)
                    {
                        return;
                    }
                    catch (Exception e) when (Potluck.Protocol.Runtime.Failures.Classify(e, _stop.Token).Kind != Potluck.Protocol.Runtime.FailureKind.Internal)
                    {
                        LogHandlerDropped(_bus._log, _topic, e.Message);
                    }
                    catch (Exception e)
                    {
                        LogHandlerFailed(_bus._log, _topic, e);
                    }
                }
            }
            catch (OperationCanceledException)
            {
            }
        }

        public void Dispose()
        {
            _stop.Cancel();
            _subscription.Dispose();
            _bus._gossip.SetValidator(_topic, null);
        }
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "Handler for topic {Topic} gave up on a message: {Reason}")]
    private static partial void LogHandlerDropped(ILogger logger, string topic, string reason);

    [LoggerMessage(Level = LogLevel.Error, Message = "Handler for topic {Topic} failed")]
    private static partial void LogHandlerFailed(ILogger logger, string topic, Exception error);
}
