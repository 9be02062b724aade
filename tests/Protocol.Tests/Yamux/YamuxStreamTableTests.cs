using Potluck.Protocol.Yamux;

namespace Potluck.Protocol.Tests.Yamux;

/// <summary>
/// The stream table: two streams inline, a dictionary only while more are open, and always a dictionary's order (a connection's
/// close completes its streams in that order, so the simulation's order of events depends on it).
/// </summary>
public class YamuxStreamTableTests
{
    [Test]
    public void RandomOpensAndCloses_EnumerateAndLookUpExactlyAsADictionary([Values(1, 2, 3, 4, 5)] int seed)
    {
        var random = new Random(seed);
        for (var run = 0; run < 200; run++)
        {
            var table = new YamuxStreamTable();
            var reference = new Dictionary<uint, YamuxStreamState>();
            var maxOpen = random.Next(1, 7); // runs that never pass two streams stay inline throughout
            for (var step = 0; step < 40; step++)
            {
                var open = reference.Keys.ToArray();
                if (open.Length > 0 && (open.Length >= maxOpen || random.Next(2) == 0))
                {
                    var id = open[random.Next(open.Length)];
                    Assert.That(table.Remove(id), Is.EqualTo(reference.Remove(id)));
                    Assert.That(table.Remove(id), Is.False, "removed once");
                }
                else
                {
                    var id = (uint)random.Next(1, 64);
                    if (reference.ContainsKey(id))
                    {
                        Assert.Throws<ArgumentException>(() => table.Add(id, new YamuxStreamState(id, true)));
                        continue;
                    }
                    var stream = new YamuxStreamState(id, true);
                    reference.Add(id, stream);
                    table.Add(id, stream);
                }
                Assert.That(table.Values.Select(s => s.Id), Is.EqualTo(reference.Values.Select(s => s.Id)), $"seed {seed}, run {run}, step {step}: order");
                Assert.That(table.Count, Is.EqualTo(reference.Count));
                var probe = (uint)random.Next(1, 64);
                Assert.That(table.TryGetValue(probe, out var found), Is.EqualTo(reference.TryGetValue(probe, out var expected)));
                Assert.That(found, Is.SameAs(expected));
                Assert.That(table.HoldsDictionary, Is.EqualTo(reference.Count > 2), "a dictionary only while more than two are open");
            }
        }
    }

    [Test]
    public void SlotsAreRefilledLastFreedFirst_AsADictionaryRefillsItsEntries()
    {
        var table = new YamuxStreamTable();
        var reference = new Dictionary<uint, YamuxStreamState>();
        void Add(uint id)
        {
            var s = new YamuxStreamState(id, false);
            table.Add(id, s);
            reference.Add(id, s);
        }
        void Remove(uint id)
        {
            table.Remove(id);
            reference.Remove(id);
        }
        Add(1);
        Add(3);
        Remove(1);
        Remove(3);
        Add(5); // takes slot 1 (freed last)
        Add(7); // then slot 0
        Assert.That(reference.Keys, Is.EqualTo(new uint[] { 7, 5 }), "the dictionary's own order, which the table must match");
        Assert.That(table.Values.Select(s => s.Id), Is.EqualTo(new uint[] { 7, 5 }));
        Add(9); // the third: a dictionary while three are open, in the same order
        Assert.That(table.HoldsDictionary, Is.True);
        Assert.That(table.Values.Select(s => s.Id), Is.EqualTo(reference.Keys));
        Remove(5);
        Assert.That(table.HoldsDictionary, Is.False, "two open again: back inline");
        Add(11); // the dictionary's slot freed last (5's) comes first again
        Add(13);
        Assert.That(table.Values.Select(s => s.Id), Is.EqualTo(reference.Keys));
    }
}
