"""Writes the hf reader's sample files (run from the repository root with pyarrow installed).

    python3 datasets/hf-sample/make_samples.py

- datasets/hf-sample/: a Hugging Face snapshot (data/<split>-00000-of-00001.parquet) of
  alpaca-style rows: instruction, input (some empty), output. train is snappy, test gzip.
- datasets/hf-chat-sample.parquet: messages (list<struct<role, content>>) ending in the
  assistant's reply, plus output_len (int64); lz4, small row groups and pages.
- datasets/hf-sample.csv: question,answer with commas and newlines inside quoted fields.
- plugins/hf/tests/data/zstd.parquet: two rows, zstd, for the unsupported-codec error.
"""

import csv
import pyarrow as pa
import pyarrow.parquet as pq

TRAIN = [
    ("Summarize the paragraph in one sentence.", "The city council voted on Tuesday to extend the bike lane network by twelve kilometres, citing a rise in cycling commuters since the bridge reopened.", "The council approved twelve more kilometres of bike lanes because more people now cycle to work."),
    ("Give three tips for keeping houseplants alive in winter.", "", "Move them closer to the light, water less often, and keep them away from cold drafts and radiators."),
    ("Translate the sentence into French.", "The library closes early on Sundays.", "La bibliothèque ferme tôt le dimanche."),
    ("Explain what a hash table is to a new programmer.", "", "A hash table stores values under keys and uses a hash function to jump straight to the slot where a key's value lives, so lookups stay fast as it grows."),
    ("Classify the review as positive or negative.", "The battery died after two days and support never answered my emails.", "Negative."),
    ("Write a haiku about the first snow.", "", "Quiet streets at dawn, / the first snow settles softly / on yesterday's leaves."),
    ("Correct the grammar in this sentence.", "Me and him goes to the market every weeks.", "He and I go to the market every week."),
    ("Name the capital of the country.", "Australia", "Canberra."),
    ("Suggest a title for a blog post about remote work.", "", "Working From Anywhere: Habits That Keep Remote Teams Connected."),
    ("Convert the temperature to Celsius.", "98.6 degrees Fahrenheit", "37 degrees Celsius."),
    ("Describe the water cycle briefly.", "", "Water evaporates, condenses into clouds, falls as rain or snow, and flows back to rivers and seas."),
    ("Rewrite the sentence in the passive voice.", "The committee approved the new budget.", "The new budget was approved by the committee."),
    ("List two advantages of electric cars.", "", "They produce no tailpipe emissions and cost less to run per kilometre."),
    ("Extract the date from the text.", "The conference will take place on 14 March 2025 in Lisbon.", "14 March 2025."),
    ("Explain why the sky appears blue.", "", "Air molecules scatter short blue wavelengths of sunlight more than longer red ones, so blue light reaches our eyes from every direction."),
    ("Find the odd one out.", "apple, banana, carrot, cherry", "Carrot, because it is a vegetable."),
    ("Write a polite email declining a meeting invitation.", "", "Thank you for the invitation; unfortunately I have a prior commitment at that time, but I would be glad to review the notes afterwards."),
    ("Compute the sum.", "17 + 25", "42."),
    ("Give a synonym for the word.", "rapid", "Quick."),
    ("Explain the difference between weather and climate.", "", "Weather is the state of the atmosphere over hours or days; climate is the average pattern over decades."),
    ("Turn the list into a sentence.", "eggs, flour, milk, sugar", "You will need eggs, flour, milk and sugar."),
    ("Recommend a book for someone who enjoys space exploration.", "", "The Martian by Andy Weir, a survival story grounded in real science."),
    ("Identify the main verb in the sentence.", "The old clock on the wall stopped at midnight.", "Stopped."),
    ("Describe how to make a cup of green tea.", "", "Heat water to about eighty degrees, steep the leaves for two minutes, then strain and serve."),
    ("Shorten the sentence without losing its meaning.", "Due to the fact that it was raining heavily, the match was postponed until a later date.", "The match was postponed because of heavy rain."),
    ("Explain what a compiler does.", "", "A compiler translates source code written by people into machine code that a processor can run."),
    ("Sort the numbers in ascending order.", "9, 2, 7, 4, 1", "1, 2, 4, 7, 9."),
    ("Write a one-line slogan for a bakery.", "", "Fresh from our oven to your morning."),
    ("Detect the language of the text.", "Dziękuję bardzo za pomoc.", "Polish."),
    ("Explain the rule of thirds in photography.", "", "Imagine the frame split into a three-by-three grid and place the subject along those lines or their crossings for a balanced picture."),
]

TEST = [
    ("Summarize the news item.", "A small museum in Porto has reopened after renovations that added a rooftop garden and a reading room.", "A Porto museum reopened with a new rooftop garden and reading room."),
    ("Give an antonym for the word.", "generous", "Stingy."),
    ("Explain what inflation means.", "", "Inflation is the general rise in prices, which means the same money buys less over time."),
    ("Translate the phrase into Spanish.", "Good night and sleep well.", "Buenas noches y que duermas bien."),
    ("Suggest a name for a grey kitten.", "", "Pebble."),
    ("State whether the statement is true or false.", "The Pacific is the largest ocean on Earth.", "True."),
    ("Explain why bread goes stale.", "", "Starch molecules recrystallise and moisture moves out of the crumb, making the bread firm and dry."),
    ("Rewrite the sentence to sound more formal.", "We gotta finish this by Friday.", "We need to complete this by Friday."),
    ("List the primary colours of light.", "", "Red, green and blue."),
    ("Count the vowels in the word.", "encyclopedia", "Six."),
]

CHATS = [
    ([("user", "What is the boiling point of water at sea level?")], "It boils at 100 degrees Celsius, or 212 degrees Fahrenheit.", 24),
    ([("system", "You are a concise travel assistant."), ("user", "Which month is best for visiting Kyoto?")], "Late March to early April for cherry blossoms, or November for autumn leaves.", 40),
    ([("user", "Can you recommend a beginner programming language?")], "Python is a good start: its syntax is readable and it has a large community.", 32),
    ([("user", "Hi!"), ("assistant", "Hello! How can I help today?"), ("user", "How many legs does a spider have?")], "Eight.", 8),
    ([("user", "Explain photosynthesis in two sentences.")], "Plants use sunlight to turn water and carbon dioxide into sugar. Oxygen is released as a by-product.", 48),
    ([("system", "Answer like a patient teacher."), ("user", "Why do we have leap years?")], "A year is about 365.24 days long, so an extra day every four years keeps the calendar in step with the seasons.", 64),
    ([("user", "What does HTTP stand for?")], "Hypertext Transfer Protocol.", 12),
    ([("user", "Give me a quick dinner idea with eggs.")], "Make a frittata with eggs, spinach, onions and a little cheese; it takes about fifteen minutes.", 56),
    ([("user", "Is a tomato a fruit?"), ("assistant", "Botanically, yes."), ("user", "Then why is it used like a vegetable?")], "Because it tastes savoury, cooks treat it as a vegetable in meals.", 30),
    ([("user", "How far is the Moon from the Earth?")], "About 384,000 kilometres on average.", 16),
    ([("system", "You write short poems."), ("user", "A couplet about rain, please.")], "The rain taps softly on the pane, / and washes dust from every lane.", 28),
    ([("user", "What is the difference between RAM and storage?")], "RAM holds data the computer is using right now and is cleared at shutdown; storage keeps files permanently.", 50),
    ([("user", "Suggest a stretching routine for the morning.")], "Try neck rolls, shoulder circles, a forward fold and a gentle spinal twist, holding each for thirty seconds.", 60),
    ([("user", "Who painted the Mona Lisa?")], "Leonardo da Vinci.", 10),
    ([("user", "Can you explain what an API is?")], "An API is a set of rules that lets one program ask another for data or actions.", 36),
    ([("user", "What should I pack for a weekend hike?")], "Water, snacks, a rain jacket, a map, sunscreen and a small first-aid kit.", 40),
    ([("user", "Why is the ocean salty?")], "Rivers carry dissolved minerals from rocks into the sea, and evaporation leaves the salt behind.", 44),
    ([("system", "Reply in one word."), ("user", "Opposite of ancient?")], "Modern.", 4),
    ([("user", "How do vaccines work?")], "They train the immune system to recognise a germ, so it can respond quickly to a real infection.", 52),
    ([("user", "Recommend a board game for four players.")], "Ticket to Ride: easy to learn and fun with four.", 20),
]

QUESTIONS = [
    ("What are the three states of matter?", "Solid, liquid, and gas."),
    ("Name a fruit that is yellow, curved, and sweet.", "A banana."),
    ("Write two lines about autumn.", "Leaves drift down in amber light,\nand evenings arrive a little earlier each night."),
    ("What is 12 multiplied by 12?", "144."),
    ("How do you say \"thank you\" in Japanese?", "Arigatou, or more politely, arigatou gozaimasu."),
    ("List the steps to boil an egg.", "1. Bring water to a boil.\n2. Lower the egg in gently.\n3. Cook for nine minutes, then cool it in cold water."),
    ("Which planet is known as the Red Planet?", "Mars."),
    ("Give an example of a renewable energy source, and say why.", "Wind, because it is replenished naturally and does not run out."),
    ("What is the longest river in Africa?", "The Nile."),
    ("Describe a rainbow to someone, briefly.", "An arc of colours, red on the outside and violet inside, that appears when sunlight passes through raindrops."),
    ("What does a thermometer measure?", "Temperature."),
    ("Quote a famous line, with its author.", "\"To be, or not to be\", from Hamlet, by William Shakespeare."),
    ("Why do cats purr?", "Usually to show contentment, although they also purr when stressed or in pain."),
    ("Write a shopping list for pancakes.", "Flour\nEggs\nMilk\nButter, for the pan"),
    ("Who was the first person to walk on the Moon?", "Neil Armstrong, in July 1969."),
]


def alpaca_table(rows):
    return pa.table({
        "instruction": [r[0] for r in rows],
        "input": [r[1] for r in rows],
        "output": [r[2] for r in rows],
    })


def main():
    pq.write_table(alpaca_table(TRAIN), "datasets/hf-sample/data/train-00000-of-00001.parquet",
                   compression="snappy")
    pq.write_table(alpaca_table(TEST), "datasets/hf-sample/data/test-00000-of-00001.parquet",
                   compression="gzip")

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    chats = pa.table({
        "messages": pa.array(
            [[{"role": r, "content": c} for r, c in turns] + [{"role": "assistant", "content": reply}]
             for turns, reply, _ in CHATS],
            type=pa.list_(message)),
        "output_len": pa.array([n for _, _, n in CHATS], type=pa.int64()),
    })
    pq.write_table(chats, "datasets/hf-chat-sample.parquet", compression="lz4",
                   row_group_size=8, data_page_size=256)

    with open("datasets/hf-sample.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["question", "answer"])
        w.writerows(QUESTIONS)

    pq.write_table(pa.table({"prompt": ["Say hello.", "Say goodbye."]}),
                   "plugins/hf/tests/data/zstd.parquet", compression="zstd")


if __name__ == "__main__":
    main()
